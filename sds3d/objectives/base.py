"""Helpers every objective shares, written once: CFG, weighting, timestep sampling, noising and
gradient injection. See shared reference objectives.md §0 for the conventions."""

from dataclasses import dataclass, field
from typing import Dict

import torch

from sds3d.config import schedule


@dataclass
class ObjectiveOutput:
    loss: torch.Tensor  # surrogate loss whose gradient w.r.t. x is the objective's g / B
    stats: Dict[str, float] = field(default_factory=dict)  # logged as objective/<name>


def cfg(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """Standard (diffusers) classifier-free guidance, the only form in sds3d:
    eps_u + s * (eps_c - eps_u). threestudio's SDS scale s equals s + 1 here."""
    return eps_uncond + scale * (eps_cond - eps_uncond)


WEIGHTINGS = {
    "sds": lambda a: 1.0 - a,  # sigma_t^2
    "uniform": lambda a: torch.ones_like(a),
    "fantasia3d": lambda a: a.sqrt() * (1.0 - a),  # alpha_t * sigma_t^2
}


def weight(name: str, alphas_cumprod: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """w(t) [B] for the weighting ``name``."""
    return WEIGHTINGS[name](alphas_cumprod[t])


def sample_t(batch: int, t_min: float, t_max: float, num_timesteps: int, device) -> torch.Tensor:
    """One timestep per batch item, uniform on the integers [floor(t_min*T), floor(t_max*T)] inclusive."""
    low, high = int(t_min * num_timesteps), int(t_max * num_timesteps)
    return torch.randint(low, high + 1, (batch,), device=device)


def timesteps(objective_cfg, batch: int, guide, step: int) -> torch.Tensor:
    """``sample_t`` over the objective's scheduled [t_min, t_max] at ``step``."""
    t_min, t_max = schedule(objective_cfg.t_min, step), schedule(objective_cfg.t_max, step)
    return sample_t(batch, t_min, t_max, guide.alphas_cumprod.shape[0], guide.alphas_cumprod.device)


def per_item(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Broadcast [B] over the trailing dims of ``like`` [B, ...]."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def add_noise(x: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """x_t = alpha_t x + sigma_t eps (DDPM forward process, as diffusers' add_noise)."""
    a = per_item(alphas_cumprod[t], x)
    return a.sqrt() * x + (1.0 - a).sqrt() * noise


def inject(x: torch.Tensor, grad: torch.Tensor, clamp: float = 0.0) -> torch.Tensor:
    """Surrogate loss 0.5 * ||x - sg(x - g)||^2 / B, whose gradient w.r.t. x is g / B.

    ``g`` is cleaned of NaN/inf and, when ``clamp`` > 0, clamped to [-clamp, clamp] first (D-SDS).
    Its value is 0.5 ||g||^2 / B: a monitor, not a convergence signal.
    """
    grad = torch.nan_to_num(grad.detach(), nan=0.0, posinf=0.0, neginf=0.0)
    if clamp > 0:
        grad = grad.clamp(-clamp, clamp)
    target = (x - grad).detach()
    return 0.5 * ((x - target) ** 2).sum() / x.shape[0]
