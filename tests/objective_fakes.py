"""Shared fakes for the objective tests: a guide whose predictions are known functions of the embedding
(recognised by content), hand-written alphas, and Conditions with distinct cond/negative/empty/no_view and
optional Perp-Neg negatives."""

from __future__ import annotations

from collections.abc import Callable

import torch

from sds3d.config import load_config
from sds3d.guides.prompts import Conditions, PerpNegatives

T = 1000
B, C, H, W = 2, 4, 3, 3
L, D = 5, 6
SHAPE = (B, C, H, W)


def objective_config(name: str, *overrides: str, config: str | None = None):
    """The objective section, with w(t) as objectives.md gives it (no blend towards uniform) unless overridden."""
    return load_config(config, prompt="x", overrides=[f"objective.name={name}", "objective.uniform_mix=0", *overrides]).objective


def hand_alphas() -> torch.Tensor:
    """A hand-written, strictly decreasing alphas_cumprod of length T (not SD's schedule)."""
    return torch.linspace(0.999, 0.001, T, dtype=torch.float32)


def make_conditions(batch: int = B, perp_neg_weights: torch.Tensor | None = None) -> Conditions:
    """cond 1, negative -1, empty 0, no_view 2; Perp-Neg negatives 3 and 4 when weights [2, batch] are given."""
    def const(v):
        return torch.full((batch, L, D), float(v))

    perp_neg = None
    if perp_neg_weights is not None:
        perp_neg = PerpNegatives(torch.stack([const(3), const(4)]), perp_neg_weights)
    return Conditions(cond=const(1), negative=const(-1), empty=const(0), no_view=const(2),
                      camera=torch.zeros(batch, 16), labels=["front"] * batch, perp_neg=perp_neg)


EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class TableGuide:
    """predict_noise answers each embedding row [B, L, D] (matched by content against ``table``) with
    its own eps function of (x_t, t), and records every call as (x_t, t, embeddings)."""

    def __init__(self, table: list[tuple[torch.Tensor, EpsFn]]):
        self.alphas_cumprod = hand_alphas()
        self.device = torch.device("cpu")
        self.table = table
        self.calls = []

    def predict_noise(self, x_t, t, embeddings):
        self.calls.append((x_t.clone(), t.clone(), embeddings.clone()))
        out = []
        for emb in embeddings:
            matches = [fn for key, fn in self.table if key.shape == emb.shape and torch.equal(key, emb)]
            assert len(matches) == 1, "embedding not in the fake guide's table"
            out.append(matches[0](x_t, t))
        return torch.stack(out)


def constant_guide(conditions: Conditions, eps: dict) -> TableGuide:
    """eps: {"cond"|"negative"|"empty"|"neg0"|"neg1": tensor [B, ...]} -> a guide answering those constants
    (the Perp-Neg names only when ``conditions`` carry negatives)."""
    keys = {"cond": conditions.cond, "negative": conditions.negative, "empty": conditions.empty}
    if conditions.perp_neg is not None:
        keys.update(neg0=conditions.perp_neg.embeddings[0], neg1=conditions.perp_neg.embeddings[1])
    return TableGuide([(keys[name], constant(value)) for name, value in eps.items() if name in keys])


def constant(value: torch.Tensor) -> EpsFn:
    return lambda x_t, t: value.clone()


def known_eps(seed: int = 0, names=("cond", "negative", "empty", "neg0", "neg1")) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randn(SHAPE, generator=g) for name in names}


def run(objective_cls, config, guide, x, conditions, step=0, seed=0, total_steps=100):
    torch.manual_seed(seed)
    out = objective_cls(config, guide, total_steps)(guide, x, conditions, step)
    out.loss.backward()
    return out


def redraw(seed: int, low: int, high: int, x: torch.Tensor, batch: int | None = None):
    """t then noise, in the order the objectives draw them (timesteps() then randn_like)."""
    torch.manual_seed(seed)
    t = torch.randint(low, high + 1, (x.shape[0] if batch is None else batch,))
    return t, torch.randn_like(x)


def per_item(values: torch.Tensor) -> torch.Tensor:
    return values.view(-1, 1, 1, 1)
