"""ISM, Interval Score Matching (LucidDreamer, Liang et al. 2024).

Instead of a random noisy sample and its noise, a deterministic DDIM-inversion trajectory under the
empty prompt: x_0 (the render) is noised to the start of the trajectory, no lower than
``ism.inversion_start`` (where a guide still predicts its noise: at t = 0 the bundled prior's prediction
has rms 0.65, not 1), with the authors' offset noise (``ism.offset_noise`` times one normal draw per
channel, shared by the batch); it is inverted in jumps of ``ism.inversion_stride`` (at most
``ism.inversion_steps``) up to s = t - ``ism.interval``, and one more inversion step takes x_s to x_t.
g = w(t) (eps_hat_s(x_t; y, t) - eps(x_s; "", s)) with w = sigma_t / alpha_t (configs/ism.yaml). One t
per step, shared by the batch, as in the authors' code.
"""

import torch

from sds3d.config import schedule
from sds3d.objectives.base import Objective, ObjectiveOutput, add_noise, guided, predict, views


def ddim_move(x: torch.Tensor, eps: torch.Tensor, a_from: torch.Tensor, a_to: torch.Tensor) -> torch.Tensor:
    """Deterministic DDIM step (eta = 0) between the noise levels alphabar ``a_from`` and ``a_to``:
    upwards it is DDIM inversion."""
    x0 = (x - (1.0 - a_from).sqrt() * eps) / a_from.sqrt()
    return a_to.sqrt() * x0 + (1.0 - a_to).sqrt() * eps


def null_eps(guide, x: torch.Tensor, t: int, conditions) -> torch.Tensor:
    t_batch = torch.full((x.shape[0],), t, device=x.device)
    return guide.predict_noise(x, t_batch, conditions.empty[None], **views(guide, conditions))[0]


def inverted_noising(guide, x: torch.Tensor, conditions, cfg, t: int, step: int, total_steps: int):
    """ISM's deterministic noising of the render ``x`` to level ``t`` (``cfg`` is the ``objective.ism`` section): x_0
    noised to the trajectory's start, DDIM-inverted under the empty prompt up to s = t - interval, then one more
    inversion step from s to t. Returns x_t, s and eps(x_s; "", s)."""
    ac, num_timesteps = guide.alphas_cumprod, guide.alphas_cumprod.shape[0]
    s = max(t - max(int(schedule(cfg.interval, step, total_steps) * num_timesteps), 1), 0)
    stride = max(int(cfg.inversion_stride * num_timesteps), 1)
    current = min(max(s - stride * cfg.inversion_steps, int(cfg.inversion_start * num_timesteps)), s)
    noise = torch.randn_like(x) + cfg.offset_noise * torch.randn(1, x.shape[1], 1, 1, device=x.device, dtype=x.dtype)
    x_s = add_noise(x.detach(), noise, torch.full((x.shape[0],), current, device=x.device), ac)
    while current < s:
        following = min(current + stride, s)
        x_s = ddim_move(x_s, null_eps(guide, x_s, current, conditions), ac[current], ac[following])
        current = following
    eps_s = null_eps(guide, x_s, s, conditions)
    return ddim_move(x_s, eps_s, ac[s], ac[t]), s, eps_s


class ISM(Objective):
    """Interval Score Matching (LucidDreamer): eps_hat(x_t) - eps(x_s) along a DDIM-inverted path."""

    def forward(self, guide, x: torch.Tensor, conditions, step: int) -> ObjectiveOutput:
        t = int(self.timesteps(1, guide, step))
        x_t, s, eps_s = inverted_noising(guide, x, conditions, self.config.ism, t, step, self.total_steps)
        t_batch = torch.full((x.shape[0],), t, device=x.device)
        eps = predict(guide, x_t, t_batch, conditions, ("cond", "negative"))
        grad = self.weight(guide, t_batch, x, step) * self.score(eps, eps_s, conditions, step)
        return self.output(x, grad, t_batch, step, s=float(s))

    def score(self, eps: dict, eps_s: torch.Tensor, conditions, step: int) -> torch.Tensor:
        """The gradient before w(t), from eps at x_t (cond, negative) and the path's eps(x_s; "", s)."""
        return guided(eps, conditions, self.scale(step)) - eps_s
