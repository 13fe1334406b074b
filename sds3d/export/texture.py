"""Mesh + colour field -> UV-unwrapped mesh + baked texture image (xatlas unwrap, UV-space rasteriser).

Texture coordinates here are in pixels of a ``resolution``-square image, x to the right and y down
(row index). The mesh gets trimesh's OBJ-convention UVs, ``(x / R, 1 - y / R)``; trimesh's glTF
writer flips v back to glTF's top-left origin, so both formats show the same image the same way.
"""

from collections.abc import Callable

import numpy as np
import torch
import trimesh
import xatlas
from PIL import Image

from sds3d.errors import ExportError
from sds3d.export.gltf import pbr_material

ColorFn = Callable[[torch.Tensor], torch.Tensor]

# Candidate (triangle, texel) pairs tested per rasterisation chunk, to bound memory at large resolutions.
_RASTER_CHUNK = 1 << 20
_COLOR_CHUNK = 65536


def unwrap(mesh: trimesh.Trimesh, resolution: int, padding: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """xatlas charts packed into one ``resolution``-square atlas.

    Returns ``vmapping[V']`` (the input vertex each output vertex copies; seams split vertices),
    ``faces[F,3]`` into the output vertices and ``uv_px[V',2]`` in pixels (x right, y down).
    """
    atlas = xatlas.Atlas()
    atlas.add_mesh(np.ascontiguousarray(mesh.vertices, dtype=np.float32), np.ascontiguousarray(mesh.faces, dtype=np.uint32))
    pack = xatlas.PackOptions()
    pack.resolution = resolution
    pack.padding = padding
    pack.bilinear = True
    atlas.generate(pack_options=pack)
    if atlas.atlas_count != 1:
        raise ExportError(f"xatlas packed the charts into {atlas.atlas_count} atlases, expected one")
    vmapping, faces, uv = atlas.get_mesh(0)
    # xatlas only approximates the requested size (many small charts need room for their gutters);
    # one uniform scale keeps texels square and the whole atlas inside the image.
    size = np.array([atlas.width, atlas.height], dtype=np.float64)
    uv_px = uv.astype(np.float64) * size * (resolution / size.max())
    return vmapping.astype(np.int64), faces.astype(np.int64), uv_px


def rasterize_uv(triangles_px: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Which triangle covers each texel centre, and where.

    ``triangles_px[F,3,2]`` are UV triangles in pixels. Returns ``face[R,R]`` (-1 where no triangle
    covers the texel centre ``(col + 0.5, row + 0.5)``) and ``bary[R,R,3]`` (barycentrics of the
    centre in that triangle, zero where uncovered).
    """
    face = np.full(resolution * resolution, -1, dtype=np.int64)
    bary = np.zeros((resolution * resolution, 3), dtype=np.float64)
    # Texel columns/rows whose centres can lie inside each triangle's bounding box.
    lo = np.clip(np.ceil(triangles_px.min(axis=1) - 0.5), 0, resolution).astype(np.int64)  # [F, 2]
    hi = np.clip(np.floor(triangles_px.max(axis=1) - 0.5), -1, resolution - 1).astype(np.int64)  # [F, 2]
    span = np.maximum(hi - lo + 1, 0)  # [F, 2]
    count = span[:, 0] * span[:, 1]  # [F]
    before = np.concatenate([[0], np.cumsum(count)])  # [F+1] candidates ahead of each triangle
    start = 0
    while start < len(triangles_px):
        stop = max(int(np.searchsorted(before, before[start] + _RASTER_CHUNK, side="right")) - 1, start + 1)
        tri = np.repeat(np.arange(start, stop), count[start:stop])  # [N] triangle of each candidate
        k = np.arange(len(tri)) - (before[tri] - before[start])  # [N] index inside its triangle's box
        col = lo[tri, 0] + k % span[tri, 0]
        row = lo[tri, 1] + k // span[tri, 0]
        weights = _barycentrics(triangles_px[tri], np.stack([col + 0.5, row + 0.5], axis=-1))  # [N, 3]
        inside = np.isfinite(weights).all(axis=1) & (weights >= -1e-9).all(axis=1)
        texel = row[inside] * resolution + col[inside]
        face[texel] = tri[inside]
        bary[texel] = weights[inside]
        start = stop
    return face.reshape(resolution, resolution), bary.reshape(resolution, resolution, 3)


def _barycentrics(tri: np.ndarray, p: np.ndarray) -> np.ndarray:
    """tri [N,3,2], p [N,2] -> [N,3]; NaN for degenerate (zero-area) triangles."""
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]

    def cross(u, v):
        return u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0]

    area = cross(b - a, c - a)
    with np.errstate(divide="ignore", invalid="ignore"):
        wa = cross(b - p, c - p) / area
        wb = cross(c - p, a - p) / area
    return np.stack([wa, wb, 1.0 - wa - wb], axis=-1)


def dilate(image: np.ndarray, filled: np.ndarray, pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """Grow the ``filled[H,W]`` region of ``image[H,W,C]`` by ``pixels`` rings.

    Each ring gives every empty texel touching the region (8-neighbourhood) the mean of its filled
    neighbours, so bilinear filtering and mipmaps at chart edges read chart colours, not background.
    """
    image, filled = image.astype(np.float64, copy=True), filled.copy()
    h, w = filled.shape
    for _ in range(pixels):
        colour = np.pad(image * filled[..., None], ((1, 1), (1, 1), (0, 0)))
        weight = np.pad(filled.astype(np.float64), 1)
        total = sum(colour[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3))
        count = sum(weight[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3))
        grow = ~filled & (count > 0)
        if not grow.any():
            break
        image[grow] = total[grow] / count[grow, None]
        filled |= grow
    return image, filled


def _evaluate(color_fn: ColorFn, points: np.ndarray) -> np.ndarray:
    out = []
    with torch.no_grad():
        for chunk in torch.from_numpy(points).float().split(_COLOR_CHUNK):
            rgb = color_fn(chunk).float().cpu()
            if rgb.shape != (len(chunk), 3):
                raise ExportError(f"the colour field returned shape {tuple(rgb.shape)} for {len(chunk)} points, expected [N, 3]")
            out.append(rgb)
    rgb = torch.cat(out).numpy() if out else np.zeros((0, 3))
    if not np.isfinite(rgb).all():
        raise ExportError("the colour field returned NaN or inf", hint="the scene is broken; export an earlier checkpoint")
    return np.clip(rgb, 0.0, 1.0)


def bake_texture(
    mesh: trimesh.Trimesh, color_fn: ColorFn, resolution: int = 1024, padding: int = 4
) -> tuple[trimesh.Trimesh, np.ndarray]:
    """UV-unwrap ``mesh`` and bake ``color_fn`` into a ``resolution``-square texture.

    Args:
        mesh: the triangle mesh, in the frame ``color_fn`` expects.
        color_fn: surface points ``[N,3]`` (float32, CPU) -> colours ``[N,3]`` in [0,1], any device;
            called under ``no_grad`` in chunks of 65536 points.
        resolution: texture width and height in pixels.
        padding: gutter between UV charts, and how many pixels each chart's colours are grown into
            it; texels beyond that get the texture's mean colour.

    Returns:
        The unwrapped mesh (vertices split at UV seams, normals of the input mesh, UVs and a PBR
        material in ``mesh.visual``) and the texture, ``[resolution, resolution, 3]`` uint8.
    """
    if len(mesh.faces) == 0:
        raise ExportError("cannot bake a texture for a mesh without faces", hint="check the isosurface threshold")
    if not 8 <= resolution <= 8192:
        raise ExportError(f"texture resolution must be between 8 and 8192, got {resolution}", hint="e.g. 1024")
    if padding < 0:
        raise ExportError(f"texture padding must be 0 or more pixels, got {padding}", hint="e.g. 4")
    vmapping, faces, uv_px = unwrap(mesh, resolution, padding)
    vertices = np.asarray(mesh.vertices, dtype=np.float64)[vmapping]
    face, bary = rasterize_uv(uv_px[faces], resolution)
    covered = face >= 0
    points = np.einsum("nk,nkd->nd", bary[covered], vertices[faces[face[covered]]])
    image = np.zeros((resolution, resolution, 3))
    image[covered] = _evaluate(color_fn, points)
    image, filled = dilate(image, covered, padding)
    if covered.any():
        image[~filled] = image[covered].mean(axis=0)
    texture = np.round(image * 255).astype(np.uint8)

    uv = np.stack([uv_px[:, 0] / resolution, 1.0 - uv_px[:, 1] / resolution], axis=-1)
    unwrapped = trimesh.Trimesh(vertices, faces, vertex_normals=np.asarray(mesh.vertex_normals)[vmapping], process=False)
    unwrapped.visual = trimesh.visual.TextureVisuals(uv=uv, material=pbr_material(Image.fromarray(texture)))
    return unwrapped, texture
