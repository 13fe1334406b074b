"""The mesh rasterizer: coverage, barycentrics, depth test, gradients against finite differences, a cube's silhouette."""

import importlib.util
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import trimesh
from scipy.spatial import ConvexHull

from sds3d.cameras import make_cameras
from sds3d.errors import ConfigError
from sds3d.render.raster import MeshRenderer, fragments, interpolate, project, rasterize

SHADING = SimpleNamespace(ambient=0.1, diffuse=0.9, light="point", headlight_lift=0.6)


class Surface:
    """A mesh whose albedo is a smooth function of position."""

    def __init__(self, vertices, faces):
        self.vertices, self.faces = vertices, faces

    def geometry(self):
        return self.vertices, self.faces

    def albedo(self, points):
        return torch.sigmoid(points @ torch.tensor([[1.0, -2.0, 0.5], [0.3, 1.0, -1.0], [2.0, 0.2, 1.0]], dtype=points.dtype))


def white(dirs):
    return torch.ones_like(dirs)


def camera(size=32, elevation=20.0, azimuth=30.0, distance=3.0, fovy=40.0):
    t = torch.tensor
    return make_cameras(t([elevation]), t([azimuth]), t([distance]), t([fovy]), size, size)


def test_single_triangle_covers_the_pixels_whose_centres_it_contains():
    # x >= 2, y >= 2, x + y <= 16: pixel (row j, col i) has its centre inside iff i >= 2, j >= 2, i + j <= 15.
    screen = torch.tensor([[[2.0, 2.0, 1.0], [14.0, 2.0, 1.0], [2.0, 14.0, 1.0]]])
    face_id = rasterize(screen, torch.tensor([[0, 1, 2]]), 16, 16)[0]
    j, i = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    expected = (i >= 2) & (j >= 2) & (i + j <= 15)
    assert torch.equal(face_id >= 0, expected)
    assert set(face_id[expected].tolist()) == {0}


def test_nearer_triangle_wins_whatever_the_order():
    near = [[0.0, 0.0, 1.0], [16.0, 0.0, 1.0], [0.0, 16.0, 1.0]]
    far = [[0.0, 0.0, 2.0], [16.0, 0.0, 2.0], [0.0, 16.0, 2.0]]
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    for order, winner in (((near, far), 0), ((far, near), 1)):
        face_id = rasterize(torch.tensor([order[0] + order[1]]), faces, 16, 16)
        assert set(face_id[face_id >= 0].tolist()) == {winner}


def test_barycentrics_sum_to_one_and_interpolate_to_the_pixel_ray():
    vertices = torch.tensor([[0.3, -0.6, -0.4], [-0.2, 0.7, -0.1], [0.1, 0.0, 0.8]], dtype=torch.float64)
    faces, cam = torch.tensor([[0, 1, 2]]), camera()
    screen = project(vertices, cam)
    frags = fragments(screen, faces, rasterize(screen, faces, 32, 32))
    assert len(frags.face) > 50
    torch.testing.assert_close(frags.bary.sum(-1), torch.ones(len(frags.face), dtype=torch.float64))
    assert (frags.bary > -1e-9).all()
    # Perspective-correct: the interpolated 3D point projects back onto the pixel centre.
    points = interpolate(vertices, faces, frags)
    centres = torch.stack([frags.col, frags.row], dim=-1).double() + 0.5
    torch.testing.assert_close(project(points, cam)[0, :, :2], centres)


def test_gradients_match_finite_differences():
    box = trimesh.creation.box(extents=(0.8, 0.6, 0.7))
    base = torch.tensor(box.vertices, dtype=torch.float64)
    faces = torch.tensor(box.faces)
    renderer = MeshRenderer(SHADING)
    weights = torch.rand(1, 24, 24, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def loss(vertices):
        out = renderer.render(Surface(vertices, faces), white, camera(24, azimuth=25.0, distance=2.5), "diffuse")
        return (out.rgb * weights).sum() + out.opacity.sum()

    vertices = base.clone().requires_grad_(True)
    loss(vertices).backward()
    eps = 1e-6
    numeric = torch.zeros_like(base)
    for v in range(len(base)):
        for k in range(3):
            step = torch.zeros_like(base)
            step[v, k] = eps
            numeric[v, k] = (loss(base + step) - loss(base - step)) / (2 * eps)
    assert vertices.grad.abs().max() > 1.0  # the silhouette moves the loss
    torch.testing.assert_close(vertices.grad, numeric, rtol=1e-4, atol=1e-4)


def _inside_convex(points, polygon):
    """Points [N, 2] strictly inside a counter-clockwise convex polygon [K, 2], and their margin to it."""
    edges = np.roll(polygon, -1, axis=0) - polygon
    rel = points[:, None, :] - polygon[None]
    cross = (edges[None, :, 0] * rel[..., 1] - edges[None, :, 1] * rel[..., 0]) / np.linalg.norm(edges, axis=-1)
    return (cross > 0).all(-1), np.abs(cross).min(-1)


def test_cube_silhouette_matches_its_projected_hull():
    cube = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    vertices, faces = torch.tensor(cube.vertices, dtype=torch.float32), torch.tensor(cube.faces)
    cam, size = camera(64, elevation=25.0, azimuth=35.0, distance=3.0, fovy=45.0), 64
    out = MeshRenderer(SHADING).render(Surface(vertices, faces), white, cam)
    corners = project(vertices, cam)[0, :, :2].double().numpy()
    hull = ConvexHull(corners)
    j, i = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    centres = np.stack([i.ravel() + 0.5, j.ravel() + 0.5], axis=-1)
    inside, margin = _inside_convex(centres, corners[hull.vertices])
    covered = (rasterize(project(vertices, cam), faces, size, size)[0] >= 0).numpy().ravel()
    clear = margin > 1e-3
    assert (covered[clear] == inside[clear]).all()
    # Box-filter antialiasing: total coverage is the hull's area up to the corners' share.
    assert abs(out.opacity.sum().item() - hull.volume) < 0.003 * hull.volume
    assert torch.allclose(out.rgb[0][out.opacity[0, ..., 0] == 0], torch.ones(3))


def test_render_output_depth_is_distance_to_the_surface():
    cube = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    surface = Surface(torch.tensor(cube.vertices, dtype=torch.float32), torch.tensor(cube.faces))
    cam = camera(16, elevation=0.0, azimuth=0.0, distance=3.0)
    out = MeshRenderer(SHADING).render(surface, white, cam, "albedo")
    assert out.rgb.shape == (1, 16, 16, 3) and out.opacity.shape == out.depth.shape == (1, 16, 16, 1)
    dirs = cam.rays()[1]
    expected = 2.5 / dirs[0, 8, 8, 0].abs()  # the face x = 0.5 seen from x = 3
    torch.testing.assert_close(out.depth[0, 8, 8, 0], expected, rtol=1e-4, atol=1e-4)
    assert out.normal[0, 8, 8, 0] > 0.5  # smooth vertex normals lean towards the face normal +x


def test_unknown_or_missing_rasterizer_is_a_clear_error():
    with pytest.raises(ConfigError, match="rasterizer"):
        MeshRenderer(SHADING, "opengl")
    if importlib.util.find_spec("nvdiffrast") is None:
        with pytest.raises(ConfigError, match="nvdiffrast is not installed"):
            MeshRenderer(SHADING, "nvdiffrast")
