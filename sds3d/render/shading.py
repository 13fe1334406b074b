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
    base = torch.ones_like(albedo) if mode == "textureless" else albedo
    return base * _light(normals, light_dir, ambient, diffuse)


def shade_composited(albedo, normal, opacity, light_dir, mode: str, ambient: float, diffuse: float) -> torch.Tensor:
    """Deferred shading of rays: the composited albedo [N, 3] (so already times the opacity [N, 1]) lit once
    from the direction of the composited normal [N, 3], as a surface is lit. Lighting each sample of a soft
    shell from its own normal instead renders it darker than the surface it stands for (a cone trained on the
    bundled prior: 0.73 of its albedo against its exported mesh's 0.85), and the albedo learns to make up for it."""
    if mode == "albedo":
        return albedo
    base = opacity.expand_as(albedo) if mode == "textureless" else albedo
    return base * _light(F.normalize(normal, dim=-1), light_dir, ambient, diffuse)


def _light(normals, light_dir, ambient: float, diffuse: float) -> torch.Tensor:
    return ambient + diffuse * (normals * light_dir).sum(-1, keepdim=True).clamp(min=0.0)
