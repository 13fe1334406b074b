"""What every objective shares, written once: the Objective base, one batched guide call per step,
CFG (with Perp-Neg), weighting, noising and gradient injection. See shared reference objectives.md §0."""

from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence

import torch
import torch.nn as nn

from sds3d.config import schedule
from sds3d.objectives.timesteps import timesteps


@dataclass
class ObjectiveOutput:
    loss: torch.Tensor  # surrogate loss whose gradient w.r.t. x is the objective's g / B
    stats: Dict[str, float] = field(default_factory=dict)  # logged as objective/<name>
    aux: Dict[str, torch.Tensor] = field(default_factory=dict)  # losses of the objective's own parameters (VSD's LoRA)
    t: Optional[torch.Tensor] = None  # [B] the timestep each item's gradient came from


WEIGHTINGS = {
    "sds": lambda a: 1.0 - a,  # sigma_t^2
    "uniform": lambda a: torch.ones_like(a),
    "fantasia3d": lambda a: a.sqrt() * (1.0 - a),  # alpha_t * sigma_t^2
    "alpha": lambda a: a.sqrt(),  # alpha_t (BSD)
    "sigma_over_alpha": lambda a: ((1.0 - a) / a).sqrt(),  # sigma_t / alpha_t (ISM)
}


def weight(name: str, alphas_cumprod: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """w(t) [B] for the weighting ``name``."""
    return WEIGHTINGS[name](alphas_cumprod[t])


def per_item(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Broadcast [B] over the trailing dims of ``like`` [B, ...]."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def add_noise(x: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """x_t = alpha_t x + sigma_t eps (DDPM forward process, as diffusers' add_noise)."""
    a = per_item(alphas_cumprod[t], x)
    return a.sqrt() * x + (1.0 - a).sqrt() * noise


def classifier_free_guidance(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """Standard (diffusers) classifier-free guidance, the only form in sds3d:
    eps_u + s * (eps_c - eps_u). threestudio's SDS scale s equals s + 1 here."""
    return eps_uncond + scale * (eps_cond - eps_uncond)


UNCONDITIONAL = ("negative", "empty")
"""The Conditions whose rows classifier-free guidance takes as unconditional: they see no image prompt."""


def views(guide, conditions) -> dict:
    """``predict_noise``'s camera argument: the batch's cameras for a ``view_aware`` guide, else nothing."""
    return {"cameras": conditions.cameras} if getattr(guide, "view_aware", False) and conditions.cameras is not None else {}


def predict(guide, x_t: torch.Tensor, t: torch.Tensor, conditions, names: Sequence[str]) -> Dict[str, torch.Tensor]:
    """eps [B, ...] under each named embedding of ``conditions`` (cond, negative, empty, no_view), plus
    "perp_neg" [N, B, ...] when the conditions carry Perp-Neg negatives: all in ONE guide call. With an image
    prompt, every row but the ``UNCONDITIONAL`` ones also sees the image.

    With region weights (``conditions.regions.mix`` [K + 1, B, 1, h, w], set by the semantic objective)
    the K region sub-prompts join that call and eps["cond"] becomes the per-pixel mix
    sum_k mix_k eps(y_k) + mix_K eps(cond). A ``view_aware`` guide also gets the batch's cameras.
    """
    embeddings = [getattr(conditions, name) for name in names]
    negatives = list(conditions.perp_neg.embeddings) if conditions.perp_neg is not None else []
    regions = conditions.regions if conditions.regions is not None and conditions.regions.mix is not None else None
    extra = list(regions.cond) if regions is not None else []
    images = {}
    if conditions.image is not None:  # every row sees the image prompt but CFG's unconditional ones
        unseen = torch.zeros_like(conditions.image)
        images["images"] = torch.stack([unseen if name in UNCONDITIONAL else conditions.image for name in names]
                                       + [conditions.image] * (len(negatives) + len(extra)))
    eps = guide.predict_noise(x_t, t, torch.stack(embeddings + negatives + extra), **views(guide, conditions), **images)
    n, p = len(names), len(negatives)
    out = {**dict(zip(names, eps)), "perp_neg": eps[n : n + p]}
    if regions is not None and "cond" in out:
        out["cond"] = (regions.mix * torch.cat([eps[n + p :], out["cond"][None]])).sum(0)
    return out


def perpendicular(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The part of ``a`` perpendicular to ``b``, per batch item (a, b [B, ...])."""
    dims = tuple(range(1, a.dim()))
    along = (a * b).sum(dims, keepdim=True) / (b * b).sum(dims, keepdim=True).clamp_min(1e-12)
    return a - along * b


def direction(eps: Dict[str, torch.Tensor], base: str, conditions) -> torch.Tensor:
    """The guidance direction eps(cond) - eps(base); with Perp-Neg, plus sum_i w_i perp(eps(neg_i) - eps(base))."""
    delta = eps["cond"] - eps[base]
    if conditions.perp_neg is not None:
        for eps_neg, w in zip(eps["perp_neg"], conditions.perp_neg.weights):
            delta = delta + per_item(w, delta) * perpendicular(eps_neg - eps[base], eps["cond"] - eps[base])
    return delta


def guided(eps: Dict[str, torch.Tensor], conditions, scale: float) -> torch.Tensor:
    """The CFG prediction whose conditional side is eps_u + direction (eps(cond) itself without Perp-Neg)."""
    return classifier_free_guidance(eps["negative"], eps["negative"] + direction(eps, "negative", conditions), scale)


def inject(x: torch.Tensor, grad: torch.Tensor, clamp: float = 0.0, normalize: bool = False) -> torch.Tensor:
    """Surrogate loss 0.5 * ||x - sg(x - g)||^2 / B, whose gradient w.r.t. x is g / B.

    ``g`` is cleaned of NaN/inf, L2-normalised over the batch when ``normalize`` (CSD), and clamped to
    [-clamp, clamp] when ``clamp`` > 0 (D-SDS), in that order. Its value is 0.5 ||g||^2 / B: a monitor,
    not a convergence signal.
    """
    grad = torch.nan_to_num(grad.detach(), nan=0.0, posinf=0.0, neginf=0.0)
    if normalize:
        grad = grad / (grad.norm() + 1e-8)
    if clamp > 0:
        grad = grad.clamp(-clamp, clamp)
    target = (x - grad).detach()
    return 0.5 * ((x - target) ** 2).sum() / x.shape[0]


class Objective(nn.Module):
    """Base of every objective: ``forward(guide, x, conditions, step) -> ObjectiveOutput``.

    ``lr`` is the learning rate of the objective's own parameters (only stateful ones have any).
    """

    lr = 0.0

    def __init__(self, config, guide, total_steps: int):
        super().__init__()
        self.config, self.total_steps = config, total_steps

    def timesteps(self, batch: int, guide, step: int) -> torch.Tensor:
        return timesteps(self.config, batch, guide.alphas_cumprod, step, self.total_steps)

    def scale(self, step: int) -> float:
        return schedule(self.config.guidance_scale, step, self.total_steps)

    def weight(self, guide, t: torch.Tensor, x: torch.Tensor, step: int) -> torch.Tensor:
        """w(t) of the configured weighting, blended towards uniform by ``uniform_mix``, shaped to broadcast over x."""
        mix = schedule(self.config.uniform_mix, step, self.total_steps)
        return per_item((1.0 - mix) * weight(self.config.weighting, guide.alphas_cumprod, t) + mix, x)

    def output(self, x: torch.Tensor, grad: torch.Tensor, t: torch.Tensor, step: int, **stats) -> ObjectiveOutput:
        """Injects ``grad`` with the configured clamp and normalisation; logs t and the gradient norm."""
        loss = inject(x, grad, schedule(self.config.grad_clip, step, self.total_steps), self.config.grad_normalize)
        stats = {"t": t.float().mean().item(), "grad_norm": grad.norm().item(), **stats}
        return ObjectiveOutput(loss, stats, t=t)
