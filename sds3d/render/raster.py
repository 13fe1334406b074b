"""Differentiable rendering of a triangle mesh, in plain torch (CPU and GPU) or with nvdiffrast.

Three steps, as in nvdiffrast (Laine et al. 2020):

1. Visibility, without gradient: each triangle is tested against the pixel centres inside its screen
   bounding box, and per pixel the nearest triangle wins. Depth and triangle id are packed into one
   int64 (depth's float32 bits high, id low) so one ``scatter_reduce(amin)`` does the depth test.
2. Barycentrics of each covered pixel are recomputed from the projected vertices of its triangle and
   made perspective-correct, so gradients reach vertex positions and whatever is interpolated.
3. Silhouette antialiasing: where a silhouette edge crosses the segment between two pixel centres,
   one covered and one not, both pixels take the 1D box-filter coverage of that crossing. The outline
   then moves continuously with the vertices and passes gradients to them. Edges where one surface
   occludes another are not antialiased.

The surface arrives as an object with ``geometry() -> (vertices [V, 3], faces [F, 3])`` and
``albedo(points [N, 3]) -> [N, 3]``, so this module never imports the scene.
"""

from dataclasses import dataclass
from typing import Callable, Optional, Tuple, get_args

import torch
import torch.nn.functional as F

from sds3d.config_schema import Rasterizer
from sds3d.errors import ConfigError
from sds3d.render.shading import light_directions, shade
from sds3d.render.output import RenderOutput

NEAR = 1e-3  # triangles with a vertex nearer than this (or behind the camera) are not drawn
RASTERIZERS = get_args(Rasterizer)


@dataclass
class Fragments:
    """The covered pixels of a batch, packed: entry n is pixel (batch[n], row[n], col[n])."""

    batch: torch.Tensor  # [N] long
    row: torch.Tensor  # [N] long
    col: torch.Tensor  # [N] long
    face: torch.Tensor  # [N] long, the visible triangle
    bary: torch.Tensor  # [N, 3] perspective-correct barycentrics, differentiable


def project(vertices: torch.Tensor, cameras) -> torch.Tensor:
    """World points [V, 3] -> [B, V, 3]: pixel x, pixel y (rows downwards; pixel i spans [i, i + 1),
    as in ``Cameras.rays``) and depth along the viewing axis. Math in the dtype of ``vertices``."""
    c2w = cameras.c2w.to(vertices.dtype)
    local = torch.einsum("bji,bvj->bvi", c2w[:, :3, :3], vertices[None] - c2w[:, None, :3, 3])  # [B, V, 3]
    depth = -local[..., 2]
    focal = 0.5 * cameras.height / torch.tan(torch.deg2rad(cameras.fovy.to(vertices.dtype)) / 2)  # [B]
    safe = depth.clamp(min=NEAR)
    x = cameras.width / 2 + focal[:, None] * local[..., 0] / safe
    y = cameras.height / 2 - focal[:, None] * local[..., 1] / safe
    return torch.stack([x, y, depth], dim=-1)


def _edge_weights(tri: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Unnormalised barycentrics [N, 3] of points [N, 2] in triangles [N, 3, 2]: twice the signed areas
    of the sub-triangles opposite each corner; they sum to twice the triangle's signed area."""
    a, b, c = tri.unbind(1)

    def edge(u, v):
        return (v[:, 0] - u[:, 0]) * (points[:, 1] - u[:, 1]) - (v[:, 1] - u[:, 1]) * (points[:, 0] - u[:, 0])

    return torch.stack([edge(b, c), edge(c, a), edge(a, b)], dim=-1)


@torch.no_grad()
def rasterize(screen: torch.Tensor, faces: torch.Tensor, height: int, width: int, chunk: int = 1 << 22) -> torch.Tensor:
    """Index of the nearest triangle whose closed interior holds each pixel centre, [B, H, W] long, -1 where
    none. ``screen`` [B, V, 3] from ``project``; at most ``chunk`` (triangle, pixel) tests at once."""
    batch = screen.shape[0]
    tri = screen[:, faces]  # [B, F, 3, 3]
    first = torch.ceil(tri[..., :2].amin(2) - 0.5).clamp(min=0)  # [B, F, 2] first pixel column, row
    last = torch.floor(tri[..., :2].amax(2) - 0.5).minimum(torch.tensor([width - 1.0, height - 1.0], device=screen.device))
    count = (last - first + 1).clamp(min=0).long()  # [B, F, 2]
    tests = count[..., 0] * count[..., 1] * (tri[..., 2].amin(-1) > NEAR)  # [B, F]
    b_idx, f_idx = tests.nonzero(as_tuple=True)
    tests = tests[b_idx, f_idx]
    keys = torch.full((batch * height * width,), torch.iinfo(torch.int64).max, dtype=torch.long, device=screen.device)
    ends = tests.cumsum(0)
    start = 0
    while start < len(tests):
        stop = max(int(torch.searchsorted(ends, ends[start] - tests[start] + chunk, right=True)), start + 1)
        part = slice(start, stop)
        _depth_test(keys, tri[b_idx[part], f_idx[part]], b_idx[part], f_idx[part], first[b_idx[part], f_idx[part]].long(),
                    count[b_idx[part], f_idx[part]], tests[part], height, width)
        start = stop
    face_id = torch.where(keys == torch.iinfo(torch.int64).max, -1, keys & 0xFFFFFFFF)
    return face_id.view(batch, height, width)


def _depth_test(keys, tri, b_idx, f_idx, first, count, tests, height: int, width: int) -> None:
    """Tests each triangle [T, 3, 3] against the pixels of its box and keeps the nearest in ``keys``."""
    owner = torch.repeat_interleave(torch.arange(len(tests), device=tri.device), tests)  # [N]
    local = torch.arange(len(owner), device=tri.device) - (tests.cumsum(0) - tests)[owner]
    col = first[owner, 0] + local % count[owner, 0]
    row = first[owner, 1] + local // count[owner, 0]
    corners = tri[owner]  # [N, 3, 3]
    w = _edge_weights(corners[..., :2], torch.stack([col, row], dim=-1).to(tri.dtype) + 0.5)  # [N, 3]
    area = w.sum(-1)
    inside = (area != 0) & ((w * area.sign()[:, None]) >= 0).all(-1)
    # 1/depth is linear in screen space, so depth = 1 / sum(b_i / z_i).
    depth = 1.0 / ((w / area[:, None]) / corners[..., 2]).sum(-1)
    packed = (depth.float().view(torch.int32).long() << 32) | f_idx[owner]  # positive floats order like their bits
    pixel = (b_idx[owner] * height + row) * width + col
    keys.scatter_reduce_(0, pixel[inside], packed[inside], "amin")


def fragments(screen: torch.Tensor, faces: torch.Tensor, face_id: torch.Tensor) -> Fragments:
    """Differentiable, perspective-correct barycentrics of the covered pixels of ``face_id`` [B, H, W]."""
    b, row, col = (face_id >= 0).nonzero(as_tuple=True)
    face = face_id[b, row, col]
    corners = screen[b[:, None], faces[face]]  # [N, 3, 3]
    w = _edge_weights(corners[..., :2], torch.stack([col, row], dim=-1).to(screen.dtype) + 0.5)
    over_depth = (w / w.sum(-1, keepdim=True)) / corners[..., 2]
    return Fragments(b, row, col, face, over_depth / over_depth.sum(-1, keepdim=True))


def interpolate(attributes: torch.Tensor, faces: torch.Tensor, frags: Fragments) -> torch.Tensor:
    """Per-vertex attributes [V, C] -> their values [N, C] at the fragments."""
    return (attributes[faces[frags.face]] * frags.bary[..., None]).sum(1)


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Unit normals [V, 3]: the area-weighted mean of the normals of the faces around each vertex."""
    a, b, c = vertices[faces].unbind(1)
    face_normals = torch.cross(b - a, c - a, dim=-1)  # length = twice the area
    summed = torch.zeros_like(vertices).index_add(0, faces.reshape(-1), face_normals.repeat_interleave(3, dim=0))
    return F.normalize(summed, dim=-1)


def edge_faces(faces: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Unique edges [E, 2] and the two faces on each [E, 2] (the second -1 on a boundary edge)."""
    pairs = torch.stack([faces, faces.roll(-1, dims=1)], dim=-1).reshape(-1, 2)  # [3F, 2]
    n = int(faces.max()) + 1
    unique, inverse = torch.unique(pairs.amin(-1) * n + pairs.amax(-1), return_inverse=True)
    owner = torch.arange(len(faces), device=faces.device).repeat_interleave(3)
    low = torch.full_like(unique, len(faces)).scatter_reduce(0, inverse, owner, "amin")
    high = torch.full_like(unique, -1).scatter_reduce(0, inverse, owner, "amax")
    return torch.stack([unique // n, unique % n], dim=-1), torch.stack([low, torch.where(high == low, -1, high)], dim=-1)


def _crossings(p0: torch.Tensor, p1: torch.Tensor, axis: int, lines: int):
    """Where segments p0-p1 [S, 2] cross the pixel-centre lines ``axis`` = k + 0.5 (0 <= k < lines),
    each line counted in [min, max) so a shared endpoint counts once: segment, line k, other coordinate."""
    a0, a1 = p0[:, axis].detach(), p1[:, axis].detach()
    first = torch.ceil(torch.minimum(a0, a1) - 0.5).clamp(min=0)
    last = (torch.ceil(torch.maximum(a0, a1) - 0.5) - 1).clamp(max=lines - 1)
    count = (last - first + 1).clamp(min=0).long()
    seg = torch.repeat_interleave(torch.arange(len(count), device=p0.device), count)
    line = first[seg].long() + torch.arange(len(seg), device=p0.device) - (count.cumsum(0) - count)[seg]
    t = (line + 0.5 - p0[seg, axis]) / (p1[seg, axis] - p0[seg, axis])
    other = p0[seg, 1 - axis] + t * (p1[seg, 1 - axis] - p0[seg, 1 - axis])
    return seg, line, other


def antialias(image: torch.Tensor, screen: torch.Tensor, faces: torch.Tensor, face_id: torch.Tensor) -> torch.Tensor:
    """Analytic silhouette antialiasing of ``image`` [B, H, W, C]: premultiplied channels, coverage last
    (hard: 1 where ``face_id`` >= 0, all zeros elsewhere).

    A silhouette edge (boundary, or between a face turned towards the camera and one turned away) that
    is steeper than 45 degrees is cut at each row's centre line and moves coverage between the two
    horizontal neighbours around the cut; a flatter one is cut at column centres (vertical neighbours).
    With d the distance in pixels from the covered pixel's centre to the cut, the covered pixel loses
    max(0, 0.5 - d) of itself and the other gains max(0, d - 0.5) of it: d = 0.2 gives 0.7 and 0.
    """
    _, height, width = face_id.shape
    edges, adjacent = edge_faces(faces)
    a, b, c = screen[:, faces, :2].unbind(2)  # [B, F, 2] each
    facing = torch.sign((b - a)[..., 0] * (c - a)[..., 1] - (b - a)[..., 1] * (c - a)[..., 0]).detach()  # [B, F]
    other = torch.where(adjacent[:, 1] >= 0, facing[:, adjacent[:, 1].clamp(min=0)], 0.0)
    drawn = (screen[:, edges, 2].amin(-1) > NEAR).detach()  # [B, E]
    b_idx, e_idx = (((adjacent[:, 1] < 0) | (facing[:, adjacent[:, 0]] != other)) & drawn).nonzero(as_tuple=True)
    p0, p1 = screen[b_idx, edges[e_idx, 0], :2], screen[b_idx, edges[e_idx, 1], :2]  # [S, 2]
    steep = ((p1 - p0)[:, 1].abs() > (p1 - p0)[:, 0].abs()).detach()
    covered = (face_id >= 0).reshape(-1)
    flat = image.reshape(-1, image.shape[-1])
    delta = torch.zeros_like(flat)
    for axis, select, size, across in ((1, steep, height, width), (0, ~steep, width, height)):
        seg, line, cut = _crossings(p0[select], p1[select], axis, size)
        near = torch.floor(cut.detach() - 0.5).long()  # the neighbour pair is near, near + 1
        keep = (near >= 0) & (near < across - 1)
        seg, line, cut, near = seg[keep], line[keep], cut[keep], near[keep]
        base = b_idx[select][seg] * height * width
        first = base + (line * width + near if axis == 1 else near * width + line)
        second = first + (1 if axis == 1 else width)
        silhouette = covered[first] != covered[second]
        first, second, offset = first[silhouette], second[silhouette], (cut - near - 0.5)[silhouette]
        inside_first = covered[first]
        obj, empty = torch.where(inside_first, first, second), torch.where(inside_first, second, first)
        distance = torch.where(inside_first, offset, 1.0 - offset)
        source = flat[obj]
        delta = delta.index_add(0, obj, -(0.5 - distance).clamp(min=0)[:, None] * source)
        delta = delta.index_add(0, empty, (distance - 0.5).clamp(min=0)[:, None] * source)
    out = flat + delta
    # Two cuts near one pixel can push its coverage outside [0, 1]; rescale all its channels back.
    raw = out[:, -1:]
    scale = torch.where(raw > 1e-6, raw.clamp(max=1.0) / raw.clamp(min=1e-6), torch.zeros_like(raw))
    return (out * scale).view_as(image)


class TorchRasterizer:
    """Visibility, barycentrics and antialiasing as above, in torch."""

    def __call__(self, screen, faces, height: int, width: int) -> Tuple[Fragments, Callable[[torch.Tensor], torch.Tensor]]:
        face_id = rasterize(screen, faces, height, width)
        return fragments(screen, faces, face_id), lambda image: antialias(image, screen, faces, face_id)


class NvdiffrastRasterizer:
    """nvdiffrast's CUDA rasterizer and antialiasing on the same projection (imported on first use)."""

    def __init__(self):
        try:
            import nvdiffrast.torch as dr
        except ImportError as exc:
            raise ConfigError("refine.rasterizer is nvdiffrast, but nvdiffrast is not installed",
                              hint="install it on a CUDA machine (pip install nvdiffrast), or set refine.rasterizer=torch") from exc
        self.dr = dr
        self.context = None

    def __call__(self, screen, faces, height: int, width: int):
        if screen.device.type != "cuda":
            raise ConfigError("the nvdiffrast rasterizer needs a CUDA device", hint="set refine.rasterizer=torch on the CPU")
        if self.context is None:
            self.context = self.dr.RasterizeCudaContext(device=screen.device)
        # Clip space whose NDC y = -1 is image row 0 (nvdiffrast's first row), near 0.01, far 100.
        w = screen[..., 2]
        ndc = torch.stack([2 * screen[..., 0] / width - 1, 2 * screen[..., 1] / height - 1], dim=-1)
        clip = torch.cat([ndc * w[..., None], (1.0002 * w - 0.020002)[..., None], w[..., None]], dim=-1).float().contiguous()
        tri = faces.int().contiguous()
        rast, _ = self.dr.rasterize(self.context, clip, tri, (height, width))
        face_id = rast[..., 3].long() - 1
        b, row, col = (face_id >= 0).nonzero(as_tuple=True)
        u, v = rast[b, row, col, 0], rast[b, row, col, 1]
        frags = Fragments(b, row, col, face_id[b, row, col], torch.stack([u, v, 1 - u - v], dim=-1).to(screen.dtype))
        return frags, lambda image: self.dr.antialias(image.float().contiguous(), rast, clip, tri).to(image.dtype)


class MeshRenderer:
    """Renders a surface (see module doc) and a background module from a batch of cameras: the call
    and ``RenderOutput`` of ``VolumeRenderer``. Normals are always computed (cheap for a mesh), depth
    is the distance along the ray, and ``orient`` stays None."""

    def __init__(self, cfg, rasterizer: str = "torch"):
        if rasterizer not in RASTERIZERS:
            raise ConfigError(f"unknown rasterizer '{rasterizer}'", hint=f"choose one of: {', '.join(RASTERIZERS)}")
        self.cfg = cfg
        self.rasterize = TorchRasterizer() if rasterizer == "torch" else NvdiffrastRasterizer()

    def render(self, surface, background, cameras, shading: str = "albedo", with_normals: bool = False,
               background_color: Optional[torch.Tensor] = None, shape_only: bool = False) -> RenderOutput:
        vertices, faces = surface.geometry()
        _, dirs = cameras.rays()
        bg = background(dirs) if background_color is None else background_color.to(dirs.device)[:, None, None, :].expand_as(dirs)
        frags, antialias_fn = self.rasterize(project(vertices, cameras), faces, cameras.height, cameras.width)
        points = interpolate(vertices, faces, frags)  # [N, 3]
        normals = F.normalize(interpolate(vertex_normals(vertices, faces), faces, frags), dim=-1)
        light = cameras.light_position.to(points.dtype)[frags.batch]
        from_camera = points - cameras.position.to(points.dtype)[frags.batch]
        distance = from_camera.norm(dim=-1, keepdim=True)
        light_dir = light_directions(self.cfg, points, light, from_camera / distance.clamp(min=1e-12))
        albedo = surface.albedo(points)
        colors = [shade(a, normals, light_dir, shading, self.cfg.ambient, self.cfg.diffuse).to(points.dtype)
                  for a in ([albedo, albedo.detach()] if shape_only else [albedo])]
        packed = torch.cat([normals, distance, torch.ones_like(distance), *colors], dim=-1)  # [N, 5 + 3 per colour]
        image = torch.zeros(len(cameras), cameras.height, cameras.width, packed.shape[-1], dtype=points.dtype, device=points.device)
        image = antialias_fn(image.index_put((frags.batch, frags.row, frags.col), packed))
        alpha, background_part = image[..., 4:5], (1.0 - image[..., 4:5]) * bg.to(image.dtype)
        return RenderOutput(rgb=image[..., 5:8] + background_part, opacity=alpha, depth=image[..., 3:4], normal=image[..., :3],
                            rgb_shape_only=image[..., 8:11] + background_part if shape_only else None)
