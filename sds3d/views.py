"""What a run shows and leaves behind: validation grids, the turntable video, and the mesh files (made by
``sds3d.export.asset``)."""

from pathlib import Path
from typing import List, Optional

import numpy as np
import torch
from torch import nn

from sds3d.cameras import orbit_cameras
from sds3d.export import write_image, write_video
from sds3d.export.asset import mesh_asset, nerf_surface, write_asset
from sds3d.render.raster import MeshRenderer
from sds3d.timing import PartTimer


def to_uint8(image: torch.Tensor) -> np.ndarray:
    return (image.clamp(0.0, 1.0) * 255).round().byte().cpu().numpy()


@torch.no_grad()
def render_view(renderer, scene, camera, shading: str = "albedo", with_normals: bool = False):
    return renderer.render(scene["field"], scene["background"], camera.to(next(scene.parameters()).device), shading, with_normals)


def validation_grid(renderer, scene, cameras_cfg, views: int, resolution: int) -> np.ndarray:
    """One row per orbit view: rgb | normal | opacity, uint8 [rows*H, 3*W, 3]."""
    rows = []
    for camera in orbit_cameras(cameras_cfg, views, resolution):
        out = render_view(renderer, scene, camera, with_normals=True)
        opacity = out.opacity[0]
        normal = (out.normal[0] * 0.5 + 0.5) * opacity + (1.0 - opacity)  # white where empty
        rows.append(torch.cat([out.rgb[0], normal, opacity.expand(-1, -1, 3)], dim=1))
    return to_uint8(torch.cat(rows, dim=0))


def save_validation(renderer, scene, cameras_cfg, train_cfg, run_dir: Path, step: int) -> Path:
    """The validation grid of ``train.val_views`` views at ``train.val_resolution``, as progress/step-<step>.png."""
    grid = validation_grid(renderer, scene, cameras_cfg, train_cfg.val_views, train_cfg.val_resolution)
    return write_image(grid, run_dir / "progress" / f"step-{step:05d}.png")


def save_turntable(renderer, scene, cameras_cfg, export_cfg, path: Path) -> Path:
    """``export.video_frames`` lit orbit views at ``export.video_resolution`` as a video."""
    cameras = orbit_cameras(cameras_cfg, export_cfg.video_frames, export_cfg.video_resolution)
    frames = [to_uint8(render_view(renderer, scene, cam, shading="diffuse").rgb[0]) for cam in cameras]
    return write_video(frames, path, fps=export_cfg.video_fps)


def export_meshes(scene, cfg, run_dir: Path, video: bool = False, timer: Optional[PartTimer] = None) -> List[Path]:
    """Marching cubes of the density, decimated and written by ``write_asset`` with the field's albedo; with
    ``video``, then the turntable of that mesh (what the user downloads), lit, by the rasterizer. ``timer``
    times the two as "mesh" and "video"."""
    timer = timer or PartTimer()
    field = scene["field"]
    device = next(field.parameters()).device
    with timer("mesh"):
        surface = nerf_surface(field, cfg.scene.radius, cfg.cameras, cfg.export, cfg.export.resolution)
        paths = write_asset(surface, lambda points: field(points.to(device))[1], cfg.export, run_dir)
    if video:
        with timer("video"):
            asset_scene = nn.ModuleDict({"field": mesh_asset(surface, field), "background": scene["background"]}).to(device)
            paths.append(save_turntable(MeshRenderer(cfg.render), asset_scene, cfg.cameras, cfg.export, run_dir / "video.mp4"))
    return paths
