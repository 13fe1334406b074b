"""SemanticSDS (Yang et al. 2024): region-wise score distillation over a layout (objectives.md §5).

Notation: K regions (the layout's leaves); M~_k their masks at the guide's resolution (``region_masks``);
g_base(e) the base objective's gradient when its prompt prediction eps(y) is e; lambda the global weight.
One t and one noise eps are shared by every term:

    g = (1/K) sum_k M~_k * g_base(eps(y_k)) + lambda * g_base(eps(y))                          (1)

(1) is the authors' stacked mean over regions (no per-pixel renormalisation) plus the global prompt y
on the whole image. Every base here is affine in eps(y) with a per-item coefficient, g_base(e) = A + J e
(SDS, SJC: J = w s; CSD: J = w c; NFSD: J = w s), so with m_k = M~_k / K, m_{K+1} = lambda, m = sum m_k:

    g = m * g_base(e*),  e* = sum_k (m_k / m) eps(y_k) + (lambda / m) eps(y)                    (2)

The base objective therefore runs once, unchanged: ``predict`` evaluates the K sub-prompts in the same
guide call as the base's own conditions and mixes e* per pixel; its gradient is then scaled by m.
Clamping and normalisation apply to the merged g, as in the authors' code. Without a region map
(no layout: the 2D playground) K = 0 and only the global term lambda * g_base(eps(y)) remains.
"""

from dataclasses import replace
from typing import Tuple

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from sds3d.config import schedule
from sds3d.objectives.base import Objective, ObjectiveOutput, inject
from sds3d.objectives.csd import CSD
from sds3d.objectives.nfsd import NFSD
from sds3d.objectives.sds import SDS
from sds3d.objectives.sjc import SJC

# Bases whose gradient is affine in eps(y) through ``direction``/``guided`` (what (2) needs); config_schema's
# SemanticBase lists the same names (a test keeps the two equal).
BASES = {"sds": SDS, "sjc": SJC, "csd": CSD, "nfsd": NFSD}


def region_masks(semantic: torch.Tensor, size: Tuple[int, int], dilation: int) -> torch.Tensor:
    """Composited region codes [B, H, W, K] -> region masks M~ [K, B, 1, h, w] at ``size`` = (h, w).

    As the authors: 1. each render pixel takes the label argmax(codes, 1 - sum(codes)), the last being
    background; 2. the one-hot labels without the background channel are average-pooled to (h, w) and
    argmax'ed, pixels with no region mass staying background; 3. each mask grows into background only:
    M~_k = M_k or (maxpool_dilation(M_k) and background).
    """
    k = semantic.shape[-1]
    scores = torch.cat([semantic, 1.0 - semantic.sum(-1, keepdim=True)], dim=-1)  # [B, H, W, K+1]
    labels = F.one_hot(scores.argmax(-1), k + 1)[..., :k].permute(0, 3, 1, 2).float()  # [B, K, H, W]
    pooled = F.adaptive_avg_pool2d(labels, size)  # [B, K, h, w]
    masks = F.one_hot(pooled.argmax(1), k).permute(0, 3, 1, 2).bool() & (pooled.sum(1, keepdim=True) > 0)
    background = ~masks.any(1, keepdim=True)  # [B, 1, h, w]
    grown = F.max_pool2d(masks.float(), dilation, stride=1, padding=dilation // 2) > 0
    return (masks | (grown & background)).float().transpose(0, 1)[:, :, None]  # [K, B, 1, h, w]


class SemanticSDS(Objective):
    """SemanticSDS: each layout region distilled under its own mask and sub-prompt, plus the global prompt."""

    def __init__(self, config, guide, total_steps: int):
        super().__init__(config, guide, total_steps)
        name = config.semantic.base
        base_config = OmegaConf.merge(config, {"name": name, "grad_clip": 0.0, "grad_normalize": False})
        self.base = BASES[name](base_config, guide, total_steps)

    def forward(self, guide, x: torch.Tensor, conditions, step: int) -> ObjectiveOutput:
        regions, global_weight = conditions.regions, schedule(self.config.semantic.global_weight, step, self.total_steps)
        if regions is None or regions.semantic is None:
            mixed, total, coverage = conditions, torch.full_like(x[:, :1], global_weight), 0.0
        else:
            masks = region_masks(regions.semantic.to(x.device), x.shape[-2:], self.config.semantic.dilation)
            weights = torch.cat([masks / masks.shape[0], torch.full_like(masks[:1], global_weight)])  # m_k, [K+1, B, 1, h, w]
            total, coverage = weights.sum(0), masks.amax(0).mean().item()  # m
            mixed = replace(conditions, regions=replace(regions, mix=weights / total.clamp_min(1e-12)))
        probe = x.detach().requires_grad_(True)
        out = self.base(guide, probe, mixed, step)
        (grad,) = torch.autograd.grad(out.loss, probe)  # g_base(e*) / B
        grad = total * grad * x.shape[0]  # (2)
        loss = inject(x, grad, schedule(self.config.grad_clip, step, self.total_steps), self.config.grad_normalize)
        stats = {**out.stats, "grad_norm": grad.norm().item(), "region_coverage": coverage}
        return ObjectiveOutput(loss, stats, out.aux, out.t)
