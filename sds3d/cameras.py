"""Cameras on a sphere around the origin, their rays, and view labels for view-dependent prompts.

World frame: +z is up, azimuth 0 looks at the object's front from +x, azimuth grows towards +y.
Camera frame: OpenGL (looks down -z, +y up). Angles are in degrees everywhere in the API.
"""

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F

VIEWS = ("front", "side", "back", "overhead")


@dataclass
class Cameras:
    """A batch of B pinhole cameras looking at the origin."""

    c2w: torch.Tensor  # [B, 4, 4] camera-to-world
    fovy: torch.Tensor  # [B] degrees
    elevation: torch.Tensor  # [B] degrees
    azimuth: torch.Tensor  # [B] degrees in [-180, 180)
    distance: torch.Tensor  # [B]
    light_position: torch.Tensor  # [B, 3]
    width: int
    height: int

    def __len__(self) -> int:
        return self.c2w.shape[0]

    @property
    def position(self) -> torch.Tensor:
        return self.c2w[:, :3, 3]

    def select(self, rows) -> "Cameras":
        """The cameras at ``rows`` (a slice or an index tensor)."""
        return Cameras(self.c2w[rows], self.fovy[rows], self.elevation[rows], self.azimuth[rows], self.distance[rows],
                       self.light_position[rows], self.width, self.height)

    def rays(self):
        """Ray origins and unit directions, both [B, H, W, 3]."""
        device = self.c2w.device
        focal = 0.5 * self.height / torch.tan(torch.deg2rad(self.fovy) / 2)  # [B]
        v, u = torch.meshgrid(
            torch.arange(self.height, device=device, dtype=torch.float32) + 0.5,
            torch.arange(self.width, device=device, dtype=torch.float32) + 0.5,
            indexing="ij",
        )
        x = (u - self.width / 2)[None] / focal[:, None, None]  # [B, H, W]
        y = -(v - self.height / 2)[None] / focal[:, None, None]
        dirs_cam = torch.stack([x, y, -torch.ones_like(x)], dim=-1)  # [B, H, W, 3]
        dirs = torch.einsum("bij,bhwj->bhwi", self.c2w[:, :3, :3], dirs_cam)
        dirs = F.normalize(dirs, dim=-1)
        origins = self.position[:, None, None, :].expand_as(dirs)
        return origins, dirs

    def to(self, device) -> "Cameras":
        moved = {k: v.to(device) if torch.is_tensor(v) else v for k, v in self.__dict__.items()}
        return Cameras(**moved)


def look_at(position: torch.Tensor) -> torch.Tensor:
    """Camera-to-world matrices [B, 4, 4] for cameras at ``position`` [B, 3] looking at the origin, z up."""
    forward = F.normalize(-position, dim=-1)
    up = torch.tensor([0.0, 0.0, 1.0], device=position.device).expand_as(forward)
    right = F.normalize(torch.cross(forward, up, dim=-1), dim=-1)
    # Straight above or below the origin "right" is undefined; any horizontal axis will do.
    degenerate = right.norm(dim=-1) < 1e-6
    right[degenerate] = torch.tensor([0.0, 1.0, 0.0], device=position.device)
    true_up = torch.cross(right, forward, dim=-1)
    c2w = torch.eye(4, device=position.device).repeat(position.shape[0], 1, 1)
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = right, true_up, -forward, position
    return c2w


def spherical_to_position(elevation: torch.Tensor, azimuth: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
    elev, azim = torch.deg2rad(elevation), torch.deg2rad(azimuth)
    return torch.stack(
        [distance * torch.cos(elev) * torch.cos(azim), distance * torch.cos(elev) * torch.sin(azim), distance * torch.sin(elev)],
        dim=-1,
    )


def make_cameras(elevation, azimuth, distance, fovy, width: int, height: int, light_position=None) -> Cameras:
    position = spherical_to_position(elevation, azimuth, distance)
    if light_position is None:
        light_position = position * 1.2
    wrapped = torch.remainder(azimuth + 180.0, 360.0) - 180.0
    return Cameras(look_at(position), fovy, elevation, wrapped, distance, light_position, width, height)


def _uniform(batch: int, bounds: Sequence[float]) -> torch.Tensor:
    low, high = bounds
    return low + (high - low) * torch.rand(batch)


def sample_cameras(cfg, width: int, height: int, batch_size: Optional[int] = None) -> Cameras:
    """Random training cameras (``cfg`` is the ``cameras`` config section; ``batch_size`` overrides its
    own), drawn from torch's global RNG.

    The point light sits near the camera: the camera direction jittered by N(0, 0.2^2), at a distance
    of ``light_distance_range`` times the camera's.
    """
    batch = batch_size or cfg.batch_size
    elevation = _uniform(batch, cfg.elevation_range)
    azimuth = _uniform(batch, cfg.azimuth_range)
    distance = _uniform(batch, cfg.distance_range)
    fovy = _uniform(batch, cfg.fovy_range)
    position = spherical_to_position(elevation, azimuth, distance)
    light_dir = F.normalize(F.normalize(position, dim=-1) + 0.2 * torch.randn(batch, 3), dim=-1)
    light_position = light_dir * (distance * _uniform(batch, cfg.light_distance_range))[:, None]
    return make_cameras(elevation, azimuth, distance, fovy, width, height, light_position)


CAMERA_FEATURES = 7


def camera_features(cameras: Optional[Cameras], batch: int = 1) -> torch.Tensor:
    """What a camera-conditioned model is told about each view, [B, CAMERA_FEATURES]: a flag (1 for a
    known camera), sin and cos of elevation and azimuth, and the distance and tan(fovy / 2), which set
    the object's size in the image, centred on the training ranges. ``None`` gives ``batch`` rows of
    zeros: "camera unknown", the token the prior is trained with under camera dropout."""
    if cameras is None:
        return torch.zeros(batch, CAMERA_FEATURES)
    elevation, azimuth = torch.deg2rad(cameras.elevation.float()), torch.deg2rad(cameras.azimuth.float())
    half_fov = torch.tan(torch.deg2rad(cameras.fovy.float()) / 2)
    return torch.stack([torch.ones_like(elevation), elevation.sin(), elevation.cos(), azimuth.sin(), azimuth.cos(),
                        (cameras.distance.float() - 1.75) / 0.25, (half_fov - 0.52) / 0.18], dim=-1)


def orbit_cameras(cfg, count: int, resolution: int) -> List[Cameras]:
    """``count`` single cameras evenly spaced in azimuth at the eval elevation, distance and fov."""
    return [
        make_cameras(
            torch.tensor([cfg.eval_elevation]),
            torch.tensor([-180.0 + 360.0 * i / count]),
            torch.tensor([cfg.eval_distance]),
            torch.tensor([cfg.eval_fovy]),
            resolution,
            resolution,
        )
        for i in range(count)
    ]


def view_labels(
    elevation: torch.Tensor, azimuth: torch.Tensor, front: float = 45.0, back: float = 45.0, overhead: float = 60.0
) -> List[str]:
    """threestudio's rule: overhead above ``overhead`` degrees of elevation, else front within
    ``front`` degrees of azimuth 0, back within ``back`` degrees of 180, side otherwise."""
    labels = []
    for elev, azim in zip(elevation.tolist(), azimuth.tolist()):
        azim = math.remainder(azim, 360.0)
        if elev > overhead:
            labels.append("overhead")
        elif abs(azim) < front:
            labels.append("front")
        elif abs(azim) > 180.0 - back:
            labels.append("back")
        else:
            labels.append("side")
    return labels
