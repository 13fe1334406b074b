"""CSM, Classifier Score Matching (TV-3DG, Yang et al. 2024; objectives.md §6.3).

SDS split into its CFG term s (eps(y) - eps("")) and the difference term eps("") - eps; CSM keeps the CFG
term alone, as CSD does, but at ISM's deterministic DDIM-inverted x_t (configured by ``objective.ism``) instead
of a random noising: g = w(t) s (eps(x_t; y) - eps(x_t; y_neg)), y_neg the negative prompt or "" (the CFG
convention of every objective here). One t per step, shared by the batch, as ISM's.
"""

import torch

from sds3d.objectives.base import direction
from sds3d.objectives.ism import ISM


class CSM(ISM):
    """Classifier Score Matching (TV-3DG): w(t) s (eps(y) - eps("")) at ISM's DDIM-inverted x_t."""

    def score(self, eps: dict, eps_s: torch.Tensor, conditions, step: int) -> torch.Tensor:
        return self.scale(step) * direction(eps, "negative", conditions)
