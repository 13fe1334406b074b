"""Timestep schedules (objectives.md §6.6): random over a (scheduled) range, HiFA's square-root anneal
and DreamTime's prior-weighted descent. Timestep bounds are fractions of the model's T, or, with
``t_unit: alphabar``, noise levels: the bound is the first timestep whose alphabar is at or below the
value, so one recipe means the same noise on SD's scaled-linear schedule and the prior's cosine one."""

import math

import torch

from sds3d.config import schedule


def sample_t(batch: int, t_min: float, t_max: float, num_timesteps: int, device) -> torch.Tensor:
    """One timestep per batch item, uniform on the integers [floor(t_min*T), floor(t_max*T)] inclusive."""
    low, high = int(t_min * num_timesteps), int(t_max * num_timesteps)
    return torch.randint(low, high + 1, (batch,), device=device)


def sqrt_anneal(t_min: float, t_max: float, step: int, total_steps: int) -> float:
    """HiFA: t/T = t_min + (t_max - t_min) (1 - sqrt(step / N)), from t_max down to t_min."""
    progress = min(step / max(total_steps, 1), 1.0)
    return t_min + (t_max - t_min) * (1.0 - math.sqrt(progress))


def dreamtime_prior(low: int, high: int, num_timesteps: int, m1: float, m2: float, s1: float, s2: float) -> torch.Tensor:
    """DreamTime's p(t) over the integers [low, high]: a plateau on [m2, m1] (fractions of T) with
    Gaussian shoulders of widths s1 above and s2 below, normalised."""
    t = torch.arange(low, high + 1, dtype=torch.float64)
    m1, m2, s1, s2 = (v * num_timesteps for v in (m1, m2, s1, s2))
    w = torch.ones_like(t)
    w = torch.where(t > m1, torch.exp(-((t - m1) ** 2) / (2 * s1**2)), w)
    w = torch.where(t < m2, torch.exp(-((t - m2) ** 2) / (2 * s2**2)), w)
    return w / w.sum()


def dreamtime(low: int, high: int, num_timesteps: int, prior, step: int, total_steps: int) -> int:
    """The non-increasing t(i) = argmin_t |sum_{tau=t}^{high} p(tau) - i/N| (i = step, N = total_steps)."""
    p = dreamtime_prior(low, high, num_timesteps, *prior)
    mass_above = torch.flip(torch.cumsum(torch.flip(p, [0]), 0), [0])  # [t - low] -> sum_{tau >= t} p
    progress = min(step / max(total_steps, 1), 1.0)
    # Of equally close candidates take the largest t, so that t(0) = high.
    distance = (mass_above - progress).abs()
    return low + int(torch.nonzero(distance == distance.min()).max())


def as_fraction(value: float, unit: str, alphas_cumprod: torch.Tensor) -> float:
    """A timestep bound as a fraction of T: itself, or (``unit`` alphabar) the first t with alphabar[t] <= value."""
    if unit == "fraction":
        return value
    index = torch.searchsorted(-alphas_cumprod.float().cpu(), torch.tensor([-float(value)])).item()  # alphabar falls with t
    return min(index, alphas_cumprod.shape[0] - 1) / alphas_cumprod.shape[0]


def timesteps(config, batch: int, alphas_cumprod: torch.Tensor, step: int, total_steps: int) -> torch.Tensor:
    """t [B] for ``step`` under the objective config's ``t_schedule`` over [t_min, t_max] (both schedulable,
    in ``t_unit``)."""
    num_timesteps, device = alphas_cumprod.shape[0], alphas_cumprod.device
    t_min, t_max = (as_fraction(schedule(bound, step, total_steps), config.t_unit, alphas_cumprod)
                    for bound in (config.t_min, config.t_max))
    if config.t_schedule == "random":
        return sample_t(batch, t_min, t_max, num_timesteps, device)
    if config.t_schedule == "sqrt_anneal":
        t = int(sqrt_anneal(t_min, t_max, step, total_steps) * num_timesteps)
    else:
        t = dreamtime(int(t_min * num_timesteps), int(t_max * num_timesteps), num_timesteps, config.dreamtime, step, total_steps)
    return torch.full((batch,), t, device=device, dtype=torch.long)
