"""Density field -> coloured triangle mesh, by marching cubes on a sampled grid."""

import math
from collections.abc import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
import trimesh
from skimage.measure import marching_cubes

from sds3d.errors import ExportError

PointFn = Callable[[torch.Tensor], torch.Tensor]


def _evaluate(fn: PointFn, chunks: Iterable[torch.Tensor], device) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([fn(points.to(device)).float().cpu() for points in chunks])


def _lattice_chunks(axis: torch.Tensor, chunk: int) -> Iterable[torch.Tensor]:
    # Points are built per chunk from flat indices, so a 512^3 grid never holds all its xyz at once.
    r = len(axis)
    for start in range(0, r**3, chunk):
        idx = torch.arange(start, min(start + chunk, r**3))
        yield torch.stack((axis[idx // r**2], axis[idx // r % r], axis[idx % r]), dim=-1)


def sample_grid(fn: PointFn, radius: float, resolution: int, chunk: int = 65536, device="cpu") -> torch.Tensor:
    """Evaluate ``fn(points[N,3]) -> [N] or [N,C]`` on the ``resolution``^3 lattice spanning
    [-radius, radius]^3 (both ends included); return ``[R,R,R]`` or ``[R,R,R,C]``, float32 on CPU.

    ``grid[i, j, k]`` is the value at ``(x_i, y_j, z_k)``.
    """
    if resolution < 2:
        raise ExportError(f"export resolution must be at least 2, got {resolution}")
    axis = torch.linspace(-radius, radius, resolution)
    values = _evaluate(fn, _lattice_chunks(axis, chunk), device)
    return values.reshape(resolution, resolution, resolution, *values.shape[1:])


def grid_values(grid: torch.Tensor, radius: float, points: torch.Tensor) -> torch.Tensor:
    """``sample_grid``'s ``[R,R,R]`` lattice trilinearly interpolated at ``points`` [..., 3] (zero outside the box)."""
    # grid[i, j, k] sits at (x_i, y_j, z_k), and grid_sample reads a point's last coordinate as the first axis
    lookup = (points.reshape(1, 1, 1, -1, 3) / radius).flip(-1).to(grid.dtype)
    return F.grid_sample(grid[None, None], lookup, align_corners=True).reshape(points.shape[:-1])


def _check_grid(grid: torch.Tensor) -> None:
    if grid.numel() == 0:
        raise ExportError("the density grid is empty", hint="use export.resolution of 2 or more")
    if not torch.isfinite(grid).all():
        raise ExportError(
            "the density grid contains NaN or inf", hint="the scene is broken; export an earlier checkpoint"
        )


def auto_threshold(density_grid: torch.Tensor, reference_step: float) -> float:
    """The density at which one renderer step of ``reference_step`` is half opaque, ln(2)/step,
    capped at half the grid's peak so that a young, faint scene still yields a surface."""
    _check_grid(density_grid)
    if reference_step <= 0:
        raise ExportError(f"reference step must be positive, got {reference_step}")
    peak = float(density_grid.max())
    if peak <= 0:
        raise ExportError(
            f"the density grid has no positive density (max {peak:.4g})", hint="train longer before exporting"
        )
    return min(math.log(2) / reference_step, 0.5 * peak)


def silhouette_threshold(max_density: torch.Tensor, optical_depth: torch.Tensor, candidates: int = 64) -> float:
    """The density level whose isosurface outlines what the volume renderer draws.

    For rays [R] through the field, ``max_density`` is the highest density along each and ``optical_depth``
    the integral of density. The renderer shows a ray (opacity above 0.5) when its optical depth exceeds
    ln 2; the level-L surface covers it when its density exceeds L somewhere. Of ``candidates`` levels,
    log-spaced below the peak, the one whose coverage has the best IoU with the render's is returned, so
    the exported mesh has the render's silhouette, haze included when the render shows haze.
    """
    peak = float(max_density.max())
    if not math.isfinite(peak) or peak <= 0:
        raise ExportError(f"the field has no positive density (max {peak:.4g})", hint="train longer before exporting")
    shown = optical_depth > math.log(2)
    levels = peak * torch.logspace(-3, 0, candidates, dtype=max_density.dtype)[:-1]
    covered = max_density[None] > levels[:, None]  # [L, R]
    union = (covered | shown).sum(-1).clamp(min=1)
    return float(levels[((covered & shown).sum(-1) / union).argmax()])


def _drop_small_components(mesh: trimesh.Trimesh, min_fraction: float) -> trimesh.Trimesh:
    labels = trimesh.graph.connected_component_labels(mesh.face_adjacency, node_count=len(mesh.faces))
    sizes = np.bincount(labels)
    mesh.update_faces(sizes[labels] >= min_fraction * sizes.max())
    mesh.remove_unreferenced_vertices()
    return mesh


def extract_mesh(
    density_fn: PointFn,
    color_fn: PointFn,
    radius: float,
    resolution: int = 128,
    threshold: float | None = None,
    reference_step: float = 0.02,
    min_component_fraction: float = 0.01,
    device="cpu",
) -> trimesh.Trimesh:
    """Mesh the surface where density crosses ``threshold`` (``auto_threshold`` when None) on the
    ``resolution``^3 lattice (``sample_grid``); the rest as :func:`mesh_grid`."""
    grid = sample_grid(density_fn, radius, resolution, device=device)
    level = auto_threshold(grid, reference_step) if threshold is None else float(threshold)
    return mesh_grid(grid, level, color_fn, radius, min_component_fraction, device)


def mesh_grid(
    grid: torch.Tensor, level: float, color_fn: PointFn, radius: float, min_component_fraction: float = 0.01, device="cpu"
) -> trimesh.Trimesh:
    """Mesh the surface where the density ``grid`` (as :func:`sample_grid` returns it) crosses ``level``.

    Faces face outward (away from high density). Connected components with fewer faces than
    ``min_component_fraction`` of the largest are dropped as floaters. Vertex colours are
    ``color_fn(vertices) -> [N,3]`` in [0,1], stored as uint8 RGBA.
    """
    _check_grid(grid)
    peak, floor = float(grid.max()), float(grid.min())
    if peak <= level:
        raise ExportError(
            f"density never reaches threshold {level:.4g} (max {peak:.4g})",
            hint="lower export.threshold or train longer",
        )
    if floor >= level:
        raise ExportError(
            f"density is above threshold {level:.4g} everywhere in the box (min {floor:.4g}), so there is no surface",
            hint="raise export.threshold",
        )
    step = 2 * radius / (grid.shape[0] - 1)
    verts, faces, _, _ = marching_cubes(grid.numpy(), level=level, spacing=(step, step, step))
    # For a field that is high inside, skimage winds faces inward; reverse them to face out.
    mesh = trimesh.Trimesh(verts - radius, faces[:, ::-1], process=False)
    mesh = _drop_small_components(mesh, min_component_fraction)
    rgb = _evaluate(color_fn, torch.from_numpy(mesh.vertices).float().split(65536), device)
    mesh.visual.vertex_colors = np.round(rgb.clamp(0, 1).numpy() * 255).astype(np.uint8)
    return mesh
