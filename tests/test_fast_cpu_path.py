"""The CPU profile's fixes: renders query normals only where a sample can show, and give the same picture
as querying them for every sample; forward-difference normals reuse the sample's density."""

import torch

from sds3d.cameras import orbit_cameras
from sds3d.config import load_config
from sds3d.render.volume import VolumeRenderer
from sds3d.train import build_scene

SMALL = ["scene.encoding.levels=2", "scene.encoding.log2_table_size=8", "scene.encoding.max_resolution=16",
         "scene.encoding.start_level=1", "render.samples=16", "render.importance_samples=8"]


def small_scene(*overrides):
    cfg = load_config(None, SMALL + list(overrides), "a red cube")
    torch.manual_seed(0)
    return cfg, build_scene(cfg)


def test_no_grad_lit_render_matches_normals_queried_everywhere_and_queries_fewer(monkeypatch):
    cfg, scene = small_scene()
    field, renderer = scene["field"], VolumeRenderer(cfg.render, cfg.scene.radius)
    camera = orbit_cameras(cfg.cameras, 1, 24)[0]
    queried = []
    normals = field.normals
    field.normals = lambda points, density: queried.append(points.shape[0]) or normals(points, density)
    with torch.no_grad():
        fast = renderer.render(field, scene["background"], camera, "diffuse", True)
        every_normal = staticmethod(lambda f, points, density, weights: f.normals(points, density))
        monkeypatch.setattr(VolumeRenderer, "_visible_normals", every_normal)
        full = renderer.render(field, scene["background"], camera, "diffuse", True)
    assert 0 < queried[0] < queried[1] == 24 * 24 * (16 + 8)
    assert torch.allclose(fast.rgb, full.rgb, atol=1e-3) and torch.allclose(fast.normal, full.normal, atol=1e-3)


def test_forward_differences_reuse_the_density_and_agree_with_central_ones():
    eps = "scene.finite_difference_eps=0.001"
    _, forward_scene = small_scene("scene.normals=forward_difference", eps)
    _, central_scene = small_scene(eps)  # the same seed: the same weights
    field, points = forward_scene["field"], torch.rand(64, 3) * 0.6 - 0.3
    density, _, forward = field.query(points, True)
    queried = []
    encode = field.encoding.forward
    field.encoding.forward = lambda x: queried.append(x.shape[0]) or encode(x)
    torch.testing.assert_close(field.normals(points, density), forward)
    assert queried == [3 * 64]
    assert (forward * central_scene["field"].normals(points)).sum(-1).min() > 0.99
