"""NFSD, Noise-Free Score Distillation (Katzir et al. 2024).

g = w(t) (delta_D + s delta_C), delta_C = eps(y) - eps("") and, per batch item, delta_D = eps("")
when t < switch*T (0.2: the paper's t < 200) else eps("") - eps(y_neg), with y_neg the run's negative
prompt (configs/nfsd.yaml sets the paper's). Three guide conditions in one call; nominal CFG 7.5.
"""

import torch

from sds3d.objectives.base import Objective, ObjectiveOutput, add_noise, direction, per_item, predict


class NFSD(Objective):
    """Noise-Free Score Distillation: w(t) (delta_D + s delta_C), no noise residual."""

    def forward(self, guide, x: torch.Tensor, conditions, step: int) -> ObjectiveOutput:
        t = self.timesteps(x.shape[0], guide, step)
        noise = torch.randn_like(x)
        eps = predict(guide, add_noise(x.detach(), noise, t, guide.alphas_cumprod), t, conditions, ("cond", "empty", "negative"))
        small_t = per_item(t < self.config.nfsd.switch * guide.alphas_cumprod.shape[0], x)
        domain = torch.where(small_t, eps["empty"], eps["empty"] - eps["negative"])
        grad = self.weight(guide, t, x, step) * (domain + self.scale(step) * direction(eps, "empty", conditions))
        return self.output(x, grad, t, step)
