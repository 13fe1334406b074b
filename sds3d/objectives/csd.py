"""CSD, Classifier Score Distillation (Yu et al. 2024), with the annealed negative-prompt variant.

g = w(t) [c eps(y) + n eps(y_neg) + u eps("") + e eps] with schedulable scales (cond, negative,
null, noise). Pure CSD is c = 1, u = -1: the classifier direction eps(y) - eps("") alone. The authors'
annealed variant moves n from 0 to -1 and u from -1 to 0 over 5000 steps, ending at eps(y) - eps(y_neg).
With Perp-Neg, c scales the Perp-Neg direction in place of eps(y) - eps("").
"""

import torch

from sds3d.config import schedule
from sds3d.objectives.base import Objective, ObjectiveOutput, add_noise, direction, predict


class CSD(Objective):
    """Classifier Score Distillation: w(t) (eps(y) - eps("")), optionally annealed towards eps(y) - eps(y_neg)."""

    def forward(self, guide, x: torch.Tensor, conditions, step: int) -> ObjectiveOutput:
        scales = {k: schedule(getattr(self.config.csd, f"{k}_scale"), step, self.total_steps)
                  for k in ("cond", "negative", "null", "noise")}
        t = self.timesteps(x.shape[0], guide, step)
        noise = torch.randn_like(x)
        eps = predict(guide, add_noise(x.detach(), noise, t, guide.alphas_cumprod), t, conditions, ("cond", "negative", "empty"))
        # c eps(y) + u eps("") written as c (eps(y) - eps("")) + (c + u) eps(""), so Perp-Neg can replace the difference.
        grad = (scales["cond"] * direction(eps, "empty", conditions) + (scales["cond"] + scales["null"]) * eps["empty"]
                + scales["negative"] * eps["negative"] + scales["noise"] * noise)
        return self.output(x, self.weight(guide, t, x, step) * grad, t, step, negative_scale=scales["negative"])
