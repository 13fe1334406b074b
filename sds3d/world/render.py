"""Ground-truth renders of world scenes by sphere tracing signed distance functions, in torch.

Shapes, for an object of half extent s centred at c (z up): sphere radius s; cube of half side 0.8 s;
cylinder and cone (apex up) of radius 0.8 s and half height 0.8 s; torus lying flat with radii 0.7 s
and 0.3 s. Shading is diffuse from a light above the camera plus ambient, on a plain background.
"""

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from sds3d.cameras import Cameras
from sds3d.world.scenes import BACKGROUND, COLORS, SHAPES, Scene

_FAR = 1e3


def _length2(x, y):
    return torch.sqrt(x * x + y * y + 1e-12)


def _box(p, s):
    q = p.abs() - 0.8 * s[..., None]
    outside = q.clamp(min=0.0).norm(dim=-1)
    return outside + q.amax(-1).clamp(max=0.0)


def _cylinder(p, s):
    dx = _length2(p[..., 0], p[..., 1]) - 0.8 * s
    dz = p[..., 2].abs() - 0.8 * s
    return torch.minimum(torch.maximum(dx, dz), torch.zeros_like(dx)) + _length2(dx.clamp(min=0.0), dz.clamp(min=0.0))


def _cone(p, s):
    """Capped cone, base radius r at z = -h, apex at z = +h (Inigo Quilez's exact distance)."""
    h, r = 0.8 * s, 0.8 * s
    qx, qy = _length2(p[..., 0], p[..., 1]), p[..., 2]
    k2x, k2y = -r, 2.0 * h
    cax = qx - torch.minimum(qx, torch.where(qy < 0, r, torch.zeros_like(r)))
    cay = qy.abs() - h
    f = (((-qx) * k2x + (h - qy) * k2y) / (k2x * k2x + k2y * k2y)).clamp(0.0, 1.0)
    cbx, cby = qx + k2x * f, qy - h + k2y * f
    sign = torch.where((cbx < 0) & (cay < 0), -1.0, 1.0)
    return sign * torch.sqrt(torch.minimum(cax * cax + cay * cay, cbx * cbx + cby * cby))


def _torus(p, s):
    return _length2(_length2(p[..., 0], p[..., 1]) - 0.7 * s, p[..., 2]) - 0.3 * s


_SDFS = {"cube": _box, "sphere": lambda p, s: p.norm(dim=-1) - s, "cone": _cone, "cylinder": _cylinder, "torus": _torus}


@dataclass
class WorldRender:
    rgb: torch.Tensor  # [B, H, W, 3]
    mask: torch.Tensor  # [B, H, W] coverage in [0, 1]
    object_ids: torch.Tensor  # [B, H, W] long, index of the visible object, -1 on background


class _Objects:
    """Scenes padded to the same object count; padding objects are never hit."""

    def __init__(self, scenes: Sequence[Scene], device):
        count = max(len(s.objects) for s in scenes)
        self.shape = torch.full((len(scenes), count), -1, dtype=torch.long, device=device)
        self.center = torch.zeros(len(scenes), count, 3, device=device)
        self.size = torch.ones(len(scenes), count, device=device)
        self.albedo = torch.zeros(len(scenes), count, 3, device=device)
        for b, scene in enumerate(scenes):
            for k, obj in enumerate(scene.objects):
                self.shape[b, k] = SHAPES.index(obj.shape)
                self.center[b, k] = torch.tensor(obj.center)
                self.size[b, k] = obj.size
                self.albedo[b, k] = torch.tensor(COLORS[obj.color])

    def distances(self, points: torch.Tensor) -> torch.Tensor:
        """points [B, N, 3] -> distance to each object [B, N, K]."""
        local = points[:, :, None, :] - self.center[:, None]  # [B, N, K, 3]
        size = self.size[:, None].expand(local.shape[:-1])
        out = torch.full(local.shape[:-1], _FAR, device=points.device)
        for code, name in enumerate(SHAPES):
            # Each SDF only on the objects of its shape: evaluating all five everywhere is 5x the work.
            b, k = (self.shape == code).nonzero(as_tuple=True)
            if len(b):
                out[b, :, k] = _SDFS[name](local[b, :, k], size[b, :, k])
        return out


def render_scenes(scenes: Sequence[Scene], cameras: Cameras, shading: str = "diffuse", supersample: int = 2,
                  steps: int = 64) -> WorldRender:
    """Renders scene b from camera b; ``shading`` is "diffuse" or "albedo"."""
    hi = Cameras(**{**cameras.__dict__, "width": cameras.width * supersample, "height": cameras.height * supersample})
    origins, dirs = hi.rays()
    batch, height, width = origins.shape[:3]
    origins, dirs = origins.reshape(batch, -1, 3), dirs.reshape(batch, -1, 3)
    objects = _Objects(scenes, origins.device)
    depth = torch.zeros(origins.shape[:2], device=origins.device)
    for _ in range(steps):
        step = objects.distances(origins + dirs * depth[..., None]).amin(-1)
        depth = (depth + step).clamp(max=_FAR)
    points = origins + dirs * depth[..., None]
    distances = objects.distances(points)
    hit = distances.amin(-1) < 1e-3
    ids = torch.where(hit, distances.argmin(-1), torch.full_like(depth, -1, dtype=torch.long))
    albedo = torch.gather(objects.albedo, 1, ids.clamp(min=0)[..., None].expand(-1, -1, 3))
    color = albedo if shading == "albedo" else albedo * _diffuse(objects, points, dirs)
    background = torch.tensor(BACKGROUND, device=origins.device)
    rgb = torch.where(hit[..., None], color, background)

    def downsample(x):  # [B, H*W, C] at the supersampled size -> [B, h, w, C]
        x = x.reshape(batch, height, width, -1).permute(0, 3, 1, 2)
        return F.avg_pool2d(x, supersample).permute(0, 2, 3, 1)

    ids_low = ids.reshape(batch, height, width)[:, supersample // 2 :: supersample, supersample // 2 :: supersample]
    return WorldRender(downsample(rgb), downsample(hit.float()[..., None])[..., 0], ids_low)


def _diffuse(objects: _Objects, points: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    eps = 1e-3
    offsets = torch.eye(3, device=points.device) * eps
    grads = [
        objects.distances(points + offsets[i]).amin(-1) - objects.distances(points - offsets[i]).amin(-1)
        for i in range(3)
    ]
    normals = F.normalize(torch.stack(grads, dim=-1), dim=-1)
    light = F.normalize(-dirs + torch.tensor([0.0, 0.0, 0.6], device=points.device), dim=-1)
    return 0.35 + 0.65 * (normals * light).sum(-1, keepdim=True).clamp(min=0.0)
