"""What a run shows and leaves behind: validation grids, the turntable video and the mesh files."""

from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from sds3d.cameras import make_cameras, orbit_cameras
from sds3d.export import (TEXTURED_FORMATS, bake_texture, decimate, extract_mesh, silhouette_threshold, write_image,
                          write_mesh, write_textured, write_video)
from sds3d.render.raster import MeshRenderer
from sds3d.render.volume import ray_box_bounds, stratified_depths
from sds3d.scene.mesh import MeshScene, TextureField
from sds3d.timing import PartTimer

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


def export_meshes(scene, cfg, run_dir: Path, formats: Sequence[str], resolution: int, video: bool = False,
                  timer: Optional[PartTimer] = None) -> List[Path]:
    """Marching cubes of the density, decimated and written by ``write_asset`` with the field's albedo; with
    ``video``, then the turntable of that mesh (what the user downloads), lit, by the rasterizer. ``timer``
    times the two as "mesh" and "video"."""
    timer = timer or PartTimer()
    field = scene["field"]
    device = next(field.parameters()).device
    with timer("mesh"):
        surface = decimate(nerf_surface(field, cfg, resolution), cfg.export.max_faces)
        paths = write_asset(surface, lambda points: field(points.to(device))[1], cfg, run_dir, formats)
    if video:
        with timer("video"):
            asset_scene = nn.ModuleDict({"field": mesh_asset(surface, field), "background": scene["background"]}).to(device)
            paths.append(save_turntable(MeshRenderer(cfg.render), asset_scene, cfg, run_dir / "video.mp4"))
    return paths


def mesh_asset(surface, field) -> MeshScene:
    """A scene-frame trimesh as a mesh scene whose texture field is a copy of the NeRF field's albedo branch."""
    return MeshScene(torch.from_numpy(surface.vertices).float(), torch.from_numpy(surface.faces).long(), TextureField.from_nerf(field))


@torch.no_grad()
def render_threshold(field, cfg, views: int = 8, resolution: int = 48, samples: int = 192) -> float:
    """The density level whose isosurface has the silhouette of the field's renders (``silhouette_threshold``),
    from ``views`` cameras around the object at the eval distance, half at the eval elevation and half
    above it, with ``samples`` evenly spaced samples per ray."""
    device = next(field.parameters()).device
    c = cfg.cameras
    elevation = torch.tensor([c.eval_elevation, c.eval_elevation + 30.0]).repeat_interleave(views // 2)
    azimuth = torch.arange(views) * (360.0 / (views // 2)) + (elevation > c.eval_elevation) * (180.0 / (views // 2))
    cameras = make_cameras(elevation, azimuth, torch.full((views,), c.eval_distance), torch.full((views,), c.eval_fovy),
                           resolution, resolution).to(device)
    origins, dirs = (t.reshape(-1, 3) for t in cameras.rays())
    near, far = ray_box_bounds(origins, dirs, cfg.scene.radius)
    depths = stratified_depths(near, far, samples, jitter=False)
    points = origins[:, None] + dirs[:, None] * depths[..., None]
    density = torch.cat([field.density(p) for p in points.reshape(-1, 3).split(65536)]).reshape(depths.shape)
    optical_depth = (density * ((far - near) / samples)[:, None]).sum(-1)
    return silhouette_threshold(density.amax(-1).cpu(), optical_depth.cpu())


def nerf_surface(field, cfg, resolution: int):
    """The NeRF field's surface by marching cubes, in the scene frame, with vertex colours from its albedo;
    at export.threshold, or when that is null at the level whose outline matches the field's renders."""
    device = next(field.parameters()).device
    threshold = render_threshold(field, cfg) if cfg.export.threshold is None else cfg.export.threshold
    with torch.no_grad():
        return extract_mesh(
            field.density,
            lambda points: field(points)[1],
            radius=cfg.scene.radius,
            resolution=resolution,
            threshold=threshold,
            reference_step=2.0 * cfg.scene.radius / (cfg.render.samples + cfg.render.importance_samples),
            min_component_fraction=cfg.export.min_component_fraction,
            device=device,
        )


def write_asset(mesh, albedo_fn, cfg, run_dir: Path, formats: Sequence[str]) -> List[Path]:
    """A scene-frame mesh, rotated to glTF axes and decimated to ``export.max_faces``, as mesh.<format>.

    ``albedo_fn`` maps scene points [N, 3] to albedo [N, 3]. With ``export.texture`` it is baked into a
    texture for glb and obj; otherwise, and for ply, it colours the vertices. Returns the written mesh
    paths in the order of ``formats``.
    """
    to_scene = torch.from_numpy(_TO_GLTF).float()

    def albedo(points_gltf: torch.Tensor) -> torch.Tensor:
        return albedo_fn(points_gltf @ to_scene)  # p_gltf = R p_scene, so p_scene = p_gltf R (rows)

    with torch.no_grad():
        mesh = mesh.copy()
        mesh.vertices = mesh.vertices @ _TO_GLTF.T
        mesh = decimate(mesh, cfg.export.max_faces)
        rgb = torch.cat([albedo(p) for p in torch.from_numpy(mesh.vertices).float().split(65536)]).clamp(0, 1).cpu().numpy()
        mesh.visual.vertex_colors = np.round(rgb * 255).astype(np.uint8)
    written = {}
    textured = [fmt for fmt in formats if cfg.export.texture and fmt in TEXTURED_FORMATS]
    if textured:
        unwrapped, texture = bake_texture(mesh, albedo, cfg.export.texture_resolution, cfg.export.texture_padding)
        written.update(zip(textured, write_textured(unwrapped, texture, run_dir, "mesh", textured)))
    for fmt in formats:
        if fmt not in written:
            written[fmt] = write_mesh(mesh, run_dir / f"mesh.{fmt}", fmt)
    return [written[fmt] for fmt in formats]
