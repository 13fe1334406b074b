"""The amortized text-to-3D generator (ATT3D's concat conditioning): one hash-grid field for a whole prompt set, whose
network reads a prompt code beside the encoding. The code is the prompt's text embedding pooled over its tokens,
standardised by the training prompts' statistics and mapped linearly, so that a prompt never trained on (a colour
and a shape seen only apart) gets a code composed like those of its words' training prompts.

During training the generator renders one training prompt per step (``update_step`` picks it); ``field_for`` gives
the plain field of any prompt, in one forward pass of the mapping.
"""

from typing import List

import torch
import torch.nn as nn

from sds3d.scene.nerf import ConstantCode, NeRFField
from sds3d.scene.occupancy import OccupancyGrid


def pooled(embeddings: torch.Tensor) -> torch.Tensor:
    """Text embeddings [P, L, D] -> one vector per prompt [P, D]: the mean over token positions (a causal text
    encoder's padding positions have read the whole prompt, so every position carries it)."""
    return embeddings.float().mean(dim=1)


class PromptCode(nn.Module):
    """Pooled text embeddings -> prompt codes [C]; as network inputs, the selected prompt's code at every point."""

    def __init__(self, prompts: int, embedding_dim: int, code_dim: int):
        super().__init__()
        self.mapping = nn.Linear(embedding_dim, code_dim)
        self.register_buffer("embeddings", torch.zeros(prompts, embedding_dim))  # the training prompts', pooled
        self.register_buffer("mean", torch.zeros(embedding_dim))
        self.register_buffer("std", torch.ones(embedding_dim))
        self.index = 0  # the training prompt the field shows now

    def set_embeddings(self, embeddings: torch.Tensor) -> None:
        """The training prompts' pooled embeddings [P, D], and the statistics every prompt is standardised by."""
        self.embeddings.copy_(embeddings)
        self.mean.copy_(embeddings.mean(0))
        self.std.copy_(embeddings.std(0, unbiased=False).clamp(min=1e-3) if len(embeddings) > 1 else torch.ones_like(self.std))

    def standardised(self, embedding: torch.Tensor) -> torch.Tensor:
        """A pooled embedding [D] in the training prompts' standard units."""
        return (embedding - self.mean) / self.std

    def code(self, embedding: torch.Tensor) -> torch.Tensor:
        """A pooled embedding [D] -> its code [C]."""
        return self.mapping(self.standardised(embedding))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.code(self.embeddings[self.index]).expand(len(points), -1)


class TextGenerator(NeRFField):
    """A NeRF field whose network reads the prompt code of ``prompts`` training prompts; ``seed`` orders them.

    Each step shows one prompt: every block of P steps visits each once, in an order drawn from the block's own
    seeded generator, so a resumed run visits the same prompts as an uninterrupted one. Each prompt keeps its own
    occupancy grid, rebuilt every ``occupancy.every`` of its visits.
    """

    def __init__(self, cfg, prompts: int, embedding_dim: int, code_dim: int, seed: int):
        super().__init__(cfg, input_codes=PromptCode(prompts, embedding_dim, code_dim))
        self.prompts, self.seed, self.code_dim = prompts, seed, code_dim
        grid = cfg.occupancy
        del self.occupancy  # one grid per prompt instead
        self.grids = nn.ModuleList([OccupancyGrid(cfg.radius, grid.resolution, grid.every * prompts, grid.threshold)
                                    for _ in range(prompts)] if grid.resolution > 0 else [])
        self.occupancy = None
        self.occupied = self._occupied if self.grids else None

    def prompt_at(self, step: int) -> int:
        block, position = divmod(step, self.prompts)
        order = torch.randperm(self.prompts, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + block))
        return int(order[position])

    def show(self, index: int) -> None:
        """Makes the field the one of training prompt ``index``."""
        self.input_codes.index = index

    def update_step(self, step: int) -> None:
        self.show(self.prompt_at(step))
        super().update_step(step)
        if self.grids:
            self.grids[self.input_codes.index].update(step, self.density)

    def _occupied(self, points: torch.Tensor) -> torch.Tensor:
        return self.grids[self.input_codes.index].occupied(points)

    @torch.no_grad()
    def field_for(self, embedding: torch.Tensor) -> NeRFField:
        """The plain field of a prompt: its pooled embedding [D] mapped to a code, with the generator's grid and network."""
        device = self.input_codes.mean.device
        code = ConstantCode(self.code_dim).to(device)
        code.code.copy_(self.input_codes.code(embedding.to(device)))
        field = NeRFField(self.cfg, input_codes=code).to(device)
        field.encoding.load_state_dict(self.encoding.state_dict())
        field.encoding.set_active_levels(self.encoding.active_levels)
        field.network.load_state_dict(self.network.state_dict())
        if field.occupancy is not None:
            field.occupancy.update(0, field.density)
        return field


def training_embeddings(guide, prompts: List[str]) -> torch.Tensor:
    """The pooled embeddings [P, D] of ``prompts`` (no view suffix)."""
    return pooled(guide.embed(list(prompts))).cpu()
