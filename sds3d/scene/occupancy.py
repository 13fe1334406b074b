"""A coarse occupancy grid of a density field, for empty-space skipping in the dense torch sampler (any device).

Cells hold whether the field's density anywhere in them (sampled at a few points per cell) exceeds
``threshold``; the marks are dilated by one cell so a surface that grows into a neighbour is still
sampled there. The grid is a buffer of the field, rebuilt every ``every`` optimisation steps, so a
checkpoint carries it and a resumed run samples exactly as an uninterrupted one.
"""

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F


class OccupancyGrid(nn.Module):
    def __init__(self, radius: float, resolution: int, every: int, threshold: float, points_per_cell: int = 2):
        super().__init__()
        self.radius, self.resolution, self.every = radius, resolution, every
        self.threshold, self.points_per_cell = threshold, points_per_cell
        self.register_buffer("cells", torch.ones(resolution, resolution, resolution, dtype=torch.bool))
        self.register_buffer("built_at", torch.tensor(-1))  # the step of the last rebuild, -1 before the first

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        # Checkpoints from before the grid have none: keep "never built", so the next step rebuilds it.
        if prefix + "cells" not in state_dict:
            return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)

    def update(self, step: int, density_fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Rebuilds the grid on the first step and at each step that starts a new block of ``every``."""
        built = int(self.built_at)
        if built >= 0 and step // self.every == built // self.every:
            return
        self.rebuild(density_fn)
        self.built_at.fill_(step)

    @torch.no_grad()
    def rebuild(self, density_fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        r, device = self.resolution, self.cells.device
        index = torch.stack(torch.meshgrid(*[torch.arange(r, device=device)] * 3, indexing="ij"), -1).reshape(-1, 3)
        # Reproducible without touching the global RNG: a run's random stream must not depend on the grid.
        generator = torch.Generator(device="cpu").manual_seed(r)
        peak = torch.zeros(r**3, device=device)
        for _ in range(self.points_per_cell):
            jitter = torch.rand(index.shape, generator=generator).to(device)
            points = ((index + jitter) / r * 2.0 - 1.0) * self.radius
            peak = torch.maximum(peak, torch.cat([density_fn(p).float() for p in points.split(65536)]))
        occupied = (peak > self.threshold).float().view(1, 1, r, r, r)
        self.cells.copy_(F.max_pool3d(occupied, 3, stride=1, padding=1)[0, 0] > 0)

    def occupied(self, points: torch.Tensor) -> torch.Tensor:
        """Whether each point [N, 3] lies in an occupied cell (points outside the cube are not)."""
        r = self.resolution
        index = ((points / self.radius + 1.0) * 0.5 * r).floor().long()
        inside = ((index >= 0) & (index < r)).all(-1)
        index = index.clamp(0, r - 1)
        return inside & self.cells[index[:, 0], index[:, 1], index[:, 2]]
