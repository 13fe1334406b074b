"""The NeRF field as an asset: its surface by marching cubes at the level its renders show, the axes turned
to glTF's, decimated, and written with its albedo baked into a texture or as vertex colours."""

from pathlib import Path
from typing import List

import numpy as np
import torch

from sds3d.cameras import make_cameras
from sds3d.export.decimate import decimate
from sds3d.export.gltf import TEXTURED_FORMATS, write_textured
from sds3d.export.isosurface import grid_values, mesh_grid, sample_grid, silhouette_threshold
from sds3d.export.mesh_io import write_mesh
from sds3d.export.texture import bake_texture
from sds3d.render.volume import ray_box_bounds, stratified_depths
from sds3d.scene.mesh import MeshScene, TextureField

# Scene frame (z up, front +x) -> glTF frame (y up, front +z), a proper rotation.
_TO_GLTF = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])


def mesh_asset(surface, field) -> MeshScene:
    """A scene-frame trimesh as a mesh scene whose texture field is a copy of the NeRF field's albedo branch."""
    return MeshScene(torch.from_numpy(surface.vertices).float(), torch.from_numpy(surface.faces).long(), TextureField.from_nerf(field))


@torch.no_grad()
def render_threshold(grid: torch.Tensor, radius: float, cameras_cfg, views: int = 8, resolution: int = 48, samples: int = 192) -> float:
    """The density level whose isosurface has the silhouette of renders of the density ``grid`` (``sample_grid``'s
    lattice over the box of half-size ``radius``, trilinearly interpolated), by ``silhouette_threshold``: from ``views`` cameras
    around the object at the eval distance, half at the eval elevation and half above it, with ``samples`` evenly
    spaced samples per ray. Rendering the lattice marching cubes meshes, not the field, calibrates the level on
    the very volume it cuts, and costs a lookup per sample instead of a field query."""
    c = cameras_cfg
    elevation = torch.tensor([c.eval_elevation, c.eval_elevation + 30.0]).repeat_interleave(views // 2)
    azimuth = torch.arange(views) * (360.0 / (views // 2)) + (elevation > c.eval_elevation) * (180.0 / (views // 2))
    cameras = make_cameras(elevation, azimuth, torch.full((views,), c.eval_distance), torch.full((views,), c.eval_fovy),
                           resolution, resolution)
    origins, dirs = (t.reshape(-1, 3) for t in cameras.rays())
    near, far = ray_box_bounds(origins, dirs, radius)
    depths = stratified_depths(near, far, samples, jitter=False)
    points = origins[:, None] + dirs[:, None] * depths[..., None]  # [R, S, 3]
    density = grid_values(grid, radius, points)  # [R, S]
    optical_depth = (density * ((far - near) / samples)[:, None]).sum(-1)
    return silhouette_threshold(density.amax(-1), optical_depth)


def nerf_surface(field, radius: float, cameras_cfg, export_cfg, resolution: int):
    """The NeRF field's surface by marching cubes over the box of half-size ``radius``, in the scene frame, with
    vertex colours from its albedo, decimated to export.max_faces; at export.threshold, or when that is null at the
    level whose outline matches renders of the sampled grid from the eval cameras of ``cameras_cfg``."""
    device = next(field.parameters()).device
    with torch.no_grad():
        grid = sample_grid(field.density, radius, resolution, device=device)
        threshold = export_cfg.threshold
        if threshold is None:
            threshold = render_threshold(grid, radius, cameras_cfg, samples=export_cfg.level_samples)
        surface = mesh_grid(grid, threshold, lambda points: field(points)[1], radius, export_cfg.min_component_fraction, device)
    return decimate(surface, export_cfg.max_faces)


def write_asset(mesh, albedo_fn, export_cfg, run_dir: Path) -> List[Path]:
    """A scene-frame mesh, rotated to glTF axes and decimated to ``export.max_faces``, as mesh.<format> for every
    one of ``export.formats``.

    ``albedo_fn`` maps scene points [N, 3] to albedo [N, 3]. With ``export.texture`` it is baked into a
    texture for glb and obj; otherwise, and for ply, it colours the vertices. Returns the written mesh
    paths in the order of ``export.formats``.
    """
    to_scene = torch.from_numpy(_TO_GLTF).float()

    def albedo(points_gltf: torch.Tensor) -> torch.Tensor:
        return albedo_fn(points_gltf @ to_scene)  # p_gltf = R p_scene, so p_scene = p_gltf R (rows)

    with torch.no_grad():
        mesh = mesh.copy()
        mesh.vertices = mesh.vertices @ _TO_GLTF.T
        mesh = decimate(mesh, export_cfg.max_faces)
        rgb = torch.cat([albedo(p) for p in torch.from_numpy(mesh.vertices).float().split(65536)]).clamp(0, 1).cpu().numpy()
        mesh.visual.vertex_colors = np.round(rgb * 255).astype(np.uint8)
    formats, written = export_cfg.formats, {}
    textured = [fmt for fmt in formats if export_cfg.texture and fmt in TEXTURED_FORMATS]
    if textured:
        unwrapped, texture = bake_texture(mesh, albedo, export_cfg.texture_resolution, export_cfg.texture_padding)
        written.update(zip(textured, write_textured(unwrapped, texture, run_dir, "mesh", textured)))
    for fmt in formats:
        if fmt not in written:
            written[fmt] = write_mesh(mesh, run_dir / f"mesh.{fmt}", fmt)
    return [written[fmt] for fmt in formats]
