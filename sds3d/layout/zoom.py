"""Zoomed views of a layout: one region (an object, or a part of one) rendered alone, framed as a single
object is, so the guide judges it by its own prompt the way it judges a one-object scene (as CompoNeRF and
Set-the-Scene render each object's own views besides the scene's)."""

import torch

from sds3d.cameras import Cameras
from sds3d.layout.spec import Box


def zoomed_cameras(cameras: Cameras, box: Box, frame: float) -> Cameras:
    """``cameras`` moved to look at ``box``'s centre from the same directions, their distance and light
    scaled by the box's largest side over ``frame`` (the side of the box the ordinary cameras frame as one
    object). Elevation, azimuth, distance and field of view keep their values: measured in the object's
    own units they are what the guide is told, so a camera-conditioned guide sees a single object's view."""
    scale = max(box.size) / frame
    centre = torch.tensor(box.center, dtype=cameras.c2w.dtype, device=cameras.c2w.device)
    c2w = cameras.c2w.clone()
    c2w[:, :3, 3] = centre + scale * cameras.c2w[:, :3, 3]
    light = centre + scale * cameras.light_position.to(centre.device)
    return Cameras(c2w, cameras.fovy, cameras.elevation, cameras.azimuth, cameras.distance, light,
                   cameras.width, cameras.height)


class IsolatedField:
    """A field seen through a box: its density is zero outside ``box``, so a render shows that region alone
    (and the renderer skips the queries outside it, as it does where an occupancy grid says empty)."""

    def __init__(self, field, box: Box):
        self.field, self.box = field, box
        self.region_codes = getattr(field, "region_codes", None)

    def occupied(self, points: torch.Tensor) -> torch.Tensor:
        inside = self.box.holds(points)
        field_occupied = getattr(self.field, "occupied", None)
        return inside if field_occupied is None else inside & field_occupied(points)

    def __call__(self, points: torch.Tensor):
        density, albedo = self.field(points)
        return density * self.box.holds(points), albedo

    def density(self, points: torch.Tensor) -> torch.Tensor:
        return self(points)[0]

    def query(self, points: torch.Tensor, with_normals: bool):
        density, albedo, normals = self.field.query(points, with_normals)
        return density * self.box.holds(points), albedo, normals

    def normals(self, points: torch.Tensor, density=None) -> torch.Tensor:
        return self.field.normals(points, density)
