import math

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import trimesh

from sds3d.atomic import atomic_write
from sds3d.errors import ExportError
from sds3d.export.asset import render_threshold
from sds3d.config import load_config
from sds3d.export import auto_threshold, extract_mesh, grid_values, mesh_grid, sample_grid, write_image, write_mesh, write_video

RADIUS, RES = 1.0, 40
VOXEL = 2 * RADIUS / (RES - 1)
SURFACE = math.log(2)  # softplus(0): the level set of ball() lies exactly at distance r


def ball(center, r):
    center = torch.tensor(center)
    return lambda p: torch.nn.functional.softplus(20 * (r - (p - center).norm(dim=-1)))


def red(p):
    return torch.tensor([1.0, 0.0, 0.0]).expand(len(p), 3)


@pytest.fixture(scope="module")
def sphere():
    return extract_mesh(ball([0.0, 0.0, 0.0], 0.5), red, RADIUS, RES, threshold=SURFACE)


def test_sample_grid_covers_the_box_end_to_end():
    grid = sample_grid(lambda p: p, radius=2.0, resolution=5, chunk=7)
    assert grid.shape == (5, 5, 5, 3)
    assert grid[0, 0, 0].tolist() == [-2.0, -2.0, -2.0]
    assert grid[4, 1, 2].tolist() == [2.0, -1.0, 0.0]


def test_grid_values_interpolate_the_lattice_trilinearly():
    grid = sample_grid(lambda p: p @ torch.tensor([1.0, -2.0, 3.0]) + 0.5, radius=2.0, resolution=5)
    points = torch.rand(6, 7, 3) * 4.0 - 2.0  # inside the box: trilinear interpolation of a linear field is exact
    expected = points @ torch.tensor([1.0, -2.0, 3.0]) + 0.5
    torch.testing.assert_close(grid_values(grid, 2.0, points), expected, atol=1e-5, rtol=0)
    assert grid_values(grid, 2.0, torch.tensor([[5.0, 0.0, 0.0]])).item() == 0.0


def test_render_threshold_outlines_what_the_renders_show():
    """A ball of density 30 in haze of 0.05 (optical depth under 0.2 along any ray, never shown): the level sits
    above the haze, and its surface is the ball's."""
    cfg = load_config(prompt="a red ball")
    centre = torch.tensor([0.3, -0.2, 0.1])
    grid = sample_grid(lambda p: torch.where((p - centre).norm(dim=-1) < 0.4, 30.0, 0.05), cfg.scene.radius, 64)
    level = render_threshold(grid, cfg.scene.radius, cfg.cameras)
    assert 0.05 < level < 30.0
    mesh = mesh_grid(grid, level, red, cfg.scene.radius)
    radii = np.linalg.norm(mesh.vertices - centre.numpy(), axis=1)
    assert np.abs(radii - 0.4).max() < 2 * 2 * cfg.scene.radius / 63


def test_sphere_surface_lies_at_its_radius(sphere):
    radii = np.linalg.norm(sphere.vertices, axis=1)
    assert abs(radii.mean() - 0.5) < VOXEL / 4
    assert np.abs(radii - 0.5).max() < VOXEL


def test_sphere_is_closed_and_faces_outward(sphere):
    assert sphere.is_watertight
    assert sphere.volume > 0
    outward = np.einsum("ij,ij->i", sphere.face_normals, sphere.triangles_center)
    assert (outward > 0).mean() > 0.99


def test_vertex_colours_come_from_color_fn(sphere):
    assert (sphere.visual.vertex_colors == [255, 0, 0, 255]).all()


def test_small_floaters_are_dropped():
    big, tiny = ball([-0.4, 0.0, 0.0], 0.4), ball([0.6, 0.0, 0.0], 0.12)
    both = lambda p: big(p) + tiny(p)  # noqa: E731
    kept = extract_mesh(both, red, RADIUS, RES, threshold=SURFACE, min_component_fraction=0.2)
    assert kept.vertices[:, 0].max() < 0.2
    everything = extract_mesh(both, red, RADIUS, RES, threshold=SURFACE, min_component_fraction=0.0)
    assert everything.vertices[:, 0].max() > 0.5


def test_auto_threshold_is_half_opacity_density_for_dense_scenes():
    grid = torch.full((4, 4, 4), 1000.0)
    assert auto_threshold(grid, reference_step=0.02) == pytest.approx(math.log(2) / 0.02)


def test_auto_threshold_is_capped_at_half_the_peak_for_faint_scenes():
    grid = torch.zeros(4, 4, 4)
    grid[1, 1, 1] = 4.0
    assert auto_threshold(grid, reference_step=0.02) == pytest.approx(2.0)


@pytest.mark.parametrize("grid", [torch.zeros(4, 4, 4), torch.full((4, 4, 4), math.nan), torch.zeros(0)])
def test_auto_threshold_rejects_grids_without_usable_density(grid):
    with pytest.raises(ExportError):
        auto_threshold(grid, reference_step=0.02)


def test_threshold_above_the_peak_is_an_export_error():
    with pytest.raises(ExportError, match="never reaches threshold"):
        extract_mesh(ball([0.0, 0.0, 0.0], 0.5), red, RADIUS, 16, threshold=100.0)


@pytest.mark.parametrize("fmt", ["glb", "obj", "ply"])
def test_mesh_formats_reload_with_faces_and_colours(sphere, tmp_path, fmt):
    path = write_mesh(sphere, tmp_path / f"mesh.{fmt}")
    loaded = trimesh.load(path, force="mesh")
    assert len(loaded.faces) == len(sphere.faces)
    assert loaded.visual.kind == "vertex"
    colours = loaded.visual.vertex_colors
    assert len(colours) == len(loaded.vertices)
    assert (colours[:, 0] > 200).all() and (colours[:, 1:3] < 50).all()


def test_explicit_format_overrides_suffix(sphere, tmp_path):
    path = write_mesh(sphere, tmp_path / "mesh.bin", fmt="ply")
    assert len(trimesh.load(path, file_type="ply", force="mesh").faces) == len(sphere.faces)


def test_unknown_mesh_format_names_the_choices(sphere, tmp_path):
    with pytest.raises(ExportError) as err:
        write_mesh(sphere, tmp_path / "mesh.stl")
    assert "glb" in err.value.hint and not (tmp_path / "mesh.stl").exists()


def test_failed_mesh_write_leaves_nothing_behind(sphere, tmp_path, monkeypatch):
    def explode(file_obj, **kwargs):
        file_obj.write_bytes(b"half a mesh")
        raise OSError("disk full")

    monkeypatch.setattr(sphere, "export", explode)
    with pytest.raises(OSError):
        write_mesh(sphere, tmp_path / "mesh.glb")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_replaces_an_existing_file_only_on_success(tmp_path):
    target = tmp_path / "ckpt.pt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target) as tmp:
        tmp.write_text("new")
        raise RuntimeError
    assert target.read_text() == "old"
    with atomic_write(target) as tmp:
        assert tmp.suffix == ".pt" and tmp.parent == tmp_path
        tmp.write_text("new")
    assert target.read_text() == "new" and list(tmp_path.iterdir()) == [target]


def test_video_with_odd_frame_size_reads_back_frame_for_frame(tmp_path):
    frames = [np.full((37, 50, 3), 20 * i, dtype=np.uint8) for i in range(6)]
    path = write_video(frames, tmp_path / "turntable.mp4", fps=10)
    assert sum(1 for _ in iio.imiter(path, plugin="FFMPEG")) == 6
    assert list(tmp_path.iterdir()) == [path]


def test_image_accepts_floats_in_unit_range(tmp_path):
    image = np.zeros((8, 8, 3), dtype=np.float32)
    image[..., 1] = 1.0
    path = write_image(image, tmp_path / "view.png")
    assert (iio.imread(path)[..., 1] == 255).all()
