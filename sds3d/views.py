"""What a run shows and leaves behind: validation grids, the turntable video and the mesh files."""

from pathlib import Path
from typing import List, Sequence

import numpy as np
import torch

from sds3d.cameras import orbit_cameras
from sds3d.export import extract_mesh, write_image, write_mesh, write_video

# Scene frame (z up, front +x) -> glTF frame (y up, front +z), a proper rotation.
_TO_GLTF = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    return (image.clamp(0.0, 1.0) * 255).round().byte().cpu().numpy()


@torch.no_grad()
def render_view(renderer, scene, camera, shading: str = "albedo", with_normals: bool = False):
    return renderer.render(scene["field"], scene["background"], camera.to(next(scene.parameters()).device), shading, with_normals)


def validation_grid(renderer, scene, cfg) -> np.ndarray:
    """One row per orbit view: rgb | normal | opacity, uint8 [rows*H, 3*W, 3]."""
    rows = []
    for camera in orbit_cameras(cfg.cameras, cfg.train.val_views, cfg.train.val_resolution):
        out = render_view(renderer, scene, camera, with_normals=True)
        opacity = out.opacity[0]
        normal = (out.normal[0] * 0.5 + 0.5) * opacity + (1.0 - opacity)  # white where empty
        rows.append(torch.cat([out.rgb[0], normal, opacity.expand(-1, -1, 3)], dim=1))
    return _to_uint8(torch.cat(rows, dim=0))


def save_validation(renderer, scene, cfg, run_dir: Path, step: int) -> Path:
    return write_image(validation_grid(renderer, scene, cfg), run_dir / "progress" / f"step-{step:05d}.png")


def save_turntable(renderer, scene, cfg, path: Path) -> Path:
    cameras = orbit_cameras(cfg.cameras, cfg.export.video_frames, cfg.export.video_resolution)
    frames = [_to_uint8(render_view(renderer, scene, cam, shading="diffuse").rgb[0]) for cam in cameras]
    return write_video(frames, path, fps=cfg.export.video_fps)


def export_meshes(scene, cfg, run_dir: Path, formats: Sequence[str], resolution: int) -> List[Path]:
    """Marching cubes of the density, vertex colours from the albedo, rotated to glTF axes."""
    field = scene["field"]
    device = next(field.parameters()).device
    with torch.no_grad():
        mesh = extract_mesh(
            field.density,
            lambda points: field(points)[1],
            radius=cfg.scene.radius,
            resolution=resolution,
            threshold=cfg.export.threshold,
            reference_step=2.0 * cfg.scene.radius / (cfg.render.samples + cfg.render.importance_samples),
            min_component_fraction=cfg.export.min_component_fraction,
            device=device,
        )
    mesh.vertices = mesh.vertices @ _TO_GLTF.T
    return [write_mesh(mesh, run_dir / f"mesh.{fmt}", fmt) for fmt in formats]
