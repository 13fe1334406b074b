"""SDS, Score Distillation Sampling (DreamFusion, Poole et al. 2023).

g = w(t) * (eps_hat_s(x_t; y, t) - eps), with eps_hat_s standard CFG against the negative prompt
(or the empty prompt without one), one t and one eps per batch item.
"""

import torch

from sds3d.objectives.base import Objective, ObjectiveOutput, add_noise, guided, predict


class SDS(Objective):
    """Score Distillation Sampling (DreamFusion): w(t) (eps_hat - eps)."""

    def forward(self, guide, x: torch.Tensor, conditions, step: int) -> ObjectiveOutput:
        t = self.timesteps(x.shape[0], guide, step)
        noise = torch.randn_like(x)
        eps = predict(guide, add_noise(x.detach(), noise, t, guide.alphas_cumprod), t, conditions, ("cond", "negative"))
        grad = self.weight(guide, t, x, step) * (guided(eps, conditions, self.scale(step)) - self.target(noise))
        return self.output(x, grad, t, step)

    def target(self, noise: torch.Tensor) -> torch.Tensor:
        """What the guided prediction is compared with: the injected noise."""
        return noise
