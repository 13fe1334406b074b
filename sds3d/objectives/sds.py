"""SDS, Score Distillation Sampling (DreamFusion, Poole et al. 2023).

g = w(t) * (eps_hat_s(x_t; y, t) - eps), with eps_hat_s standard CFG against the negative prompt
(or the empty prompt without one), one t and one eps per batch item.
"""

import torch
import torch.nn as nn

from sds3d.config import schedule
from sds3d.objectives.base import ObjectiveOutput, add_noise, cfg, inject, per_item, timesteps, weight


class SDS(nn.Module):
    """Score Distillation Sampling (DreamFusion): w(t) (eps_hat - eps)."""

    def __init__(self, config):
        super().__init__()
        self.config = config

    def forward(self, guide, x: torch.Tensor, conditions, step: int) -> ObjectiveOutput:
        t = timesteps(self.config, x.shape[0], guide, step)
        noise = torch.randn_like(x)
        x_t = add_noise(x.detach(), noise, t, guide.alphas_cumprod)
        eps_cond, eps_uncond = guide.predict_noise(x_t, t, torch.stack([conditions.cond, conditions.uncond]))
        eps_hat = cfg(eps_uncond, eps_cond, schedule(self.config.guidance_scale, step))
        grad = per_item(weight(self.config.weighting, guide.alphas_cumprod, t), x) * (eps_hat - noise)
        loss = inject(x, grad, schedule(self.config.grad_clip, step))
        return ObjectiveOutput(loss, {"t": t.float().mean().item(), "grad_norm": grad.norm().item()})
