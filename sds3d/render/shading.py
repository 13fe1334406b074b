"""Shading of albedo samples: albedo only, diffuse, or textureless (white albedo); lit by a point light
(DreamFusion's random light near the camera) or a headlight (the light of the bundled prior's world renders:
from the camera, lifted towards +z, per ray)."""

import torch
import torch.nn.functional as F

SHADING_MODES = ("albedo", "diffuse", "textureless")


def pick_shading(step: int, cfg) -> str:
    """threestudio's rule: albedo only before ``ambient_only_steps``; then lit with ``diffuse_prob``
    (and of the lit renders, ``textureless_prob`` without albedo), else albedo."""
    if step < cfg.ambient_only_steps:
        return "albedo"
    if torch.rand(()).item() >= cfg.diffuse_prob:
        return "albedo"
    return "textureless" if torch.rand(()).item() < cfg.textureless_prob else "diffuse"


def light_directions(cfg, points, light_position, dirs) -> torch.Tensor:
    """Unit vectors [N, 3] from each sample towards the light under ``cfg.light`` (a render config):
    ``point`` at ``light_position`` [N, 3], or ``headlight``: -ray direction + (0, 0, cfg.headlight_lift)."""
    if cfg.light == "point":
        return F.normalize(light_position - points, dim=-1)
    lift = torch.tensor([0.0, 0.0, cfg.headlight_lift], device=dirs.device, dtype=dirs.dtype)
    return F.normalize(-dirs + lift, dim=-1)


def shade(albedo, normals, light_dir, mode: str, ambient: float, diffuse: float) -> torch.Tensor:
    """albedo, normals, light_dir [N, 3] (``light_directions``): albedo * (ambient + diffuse * max(0, n.l))."""
    if mode == "albedo":
        return albedo
    lambert = (normals * light_dir).sum(-1, keepdim=True).clamp(min=0.0)
    base = torch.ones_like(albedo) if mode == "textureless" else albedo
    return base * (ambient + diffuse * lambert)
