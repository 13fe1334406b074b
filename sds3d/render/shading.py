"""Shading of albedo samples: albedo only, diffuse under a point light, or textureless (white albedo)."""

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

def shade(albedo, normals, points, light_position, mode: str, ambient: float, diffuse: float) -> torch.Tensor:
    """albedo, normals, points [N, 3]; light_position [N, 3] (the light of each sample's camera)."""
    if mode == "albedo":
        return albedo
    light_dir = F.normalize(light_position - points, dim=-1)
    lambert = (normals * light_dir).sum(-1, keepdim=True).clamp(min=0.0)
    base = torch.ones_like(albedo) if mode == "textureless" else albedo
    return base * (ambient + diffuse * lambert)
