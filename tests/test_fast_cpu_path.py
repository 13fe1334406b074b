"""The CPU profile's fix: renders without gradients (validation, video) query normals only where a
sample can show, and give the same picture as querying them for every sample."""

import torch

from sds3d.cameras import orbit_cameras
from sds3d.config import load_config
from sds3d.render.volume import VolumeRenderer
from sds3d.train import build_scene

SMALL = ["scene.encoding.levels=2", "scene.encoding.log2_table_size=8", "scene.encoding.max_resolution=16",
         "scene.encoding.start_level=1", "render.samples=16", "render.importance_samples=8"]


class NormalsEverywhere:
    """The field, answering every query with normals (what the renderer did before)."""

    def __init__(self, field):
        self.field = field

    def query(self, points, with_normals):
        return self.field.query(points, True)


def test_no_grad_lit_render_matches_normals_queried_everywhere_and_queries_fewer():
    cfg = load_config(None, SMALL, "a red cube")
    torch.manual_seed(0)
    scene = build_scene(cfg)
    field, renderer = scene["field"], VolumeRenderer(cfg.render, cfg.scene.radius)
    camera = orbit_cameras(cfg.cameras, 1, 24)[0]
    queried = []
    query = field.query
    field.query = lambda points, with_normals: queried.append(points.shape[0] * with_normals) or query(points, with_normals)
    with torch.no_grad():
        fast = renderer.render(field, scene["background"], camera, "diffuse", True)
        full = renderer.render(NormalsEverywhere(field), scene["background"], camera, "diffuse", True)
    assert 0 < queried[2] < 24 * 24 * (16 + 8)  # coarse pass, main pass, then the visible samples' normals
    assert torch.allclose(fast.rgb, full.rgb, atol=1e-3) and torch.allclose(fast.normal, full.normal, atol=1e-3)
