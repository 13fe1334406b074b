"""BSD, Balanced Score Distillation (PlacidDreamer, Huang et al. 2024).

The classifier direction c = k (eps(y) - eps("")) (k = 15 in the authors' code) and the smoothing
direction d = eps("") are balanced per batch item by the min-norm (MGDA) rule
a* = clip(<d - c, d> / ||d - c||^2, 0, 1); g = w(t) (a* c + (1 - a*) d) with w = alpha_t (configs/bsd.yaml).
"""

import torch

from sds3d.objectives.base import Objective, ObjectiveOutput, add_noise, direction, per_item, predict


def min_norm_weight(c: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """a* [B] minimising ||a c + (1 - a) d|| over a in [0, 1], per batch item."""
    dims = tuple(range(1, c.dim()))
    diff = d - c
    return ((diff * d).sum(dims) / (diff * diff).sum(dims).clamp_min(1e-12)).clamp(0.0, 1.0)


class BSD(Objective):
    """Balanced Score Distillation: min-norm mix of the classifier and smoothing directions."""

    def forward(self, guide, x: torch.Tensor, conditions, step: int) -> ObjectiveOutput:
        t = self.timesteps(x.shape[0], guide, step)
        noise = torch.randn_like(x)
        eps = predict(guide, add_noise(x.detach(), noise, t, guide.alphas_cumprod), t, conditions, ("cond", "empty"))
        c = self.config.bsd.classifier_weight * direction(eps, "empty", conditions)
        d = eps["empty"]
        a = per_item(min_norm_weight(c, d), x)
        grad = self.weight(guide, t, x, step) * (a * c + (1.0 - a) * d)
        return self.output(x, grad, t, step, balance=a.mean().item())
