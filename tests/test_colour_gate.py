"""objective.colour_t_max: renders noised above the bound teach shape only."""

from types import SimpleNamespace

import pytest
import torch
import trimesh

from sds3d.cameras import make_cameras
from sds3d.config import load_config
from sds3d.errors import ConfigError
from sds3d.render.colour_gate import colour_passes, gate_colour
from sds3d.render.raster import MeshRenderer
from sds3d.render.volume import VolumeRenderer
from sds3d.train import build_session, train_step


class HazyBall:
    """A semi-transparent ball whose density scale and albedo are parameters."""

    def __init__(self):
        self.log_density = torch.tensor(1.0, requires_grad=True)
        self.colour = torch.tensor([0.5, -1.0, 0.2], requires_grad=True)

    def query(self, points, with_normals):
        inside = (points.norm(dim=-1) < 0.5).float()
        return inside * self.log_density.exp(), torch.sigmoid(self.colour).expand(points.shape[0], 3), None


def cameras(batch=2, size=6):
    ones = torch.ones(batch)
    return make_cameras(torch.tensor([0.0, 30.0])[:batch], torch.tensor([0.0, 90.0])[:batch], 3 * ones, 30 * ones, size, size)


def volume_renderer():
    cfg = SimpleNamespace(samples=32, importance_samples=0, chunk=4096, ambient=0.1, diffuse=0.9,
                          light="point", headlight_lift=0.6, deferred_shading=False)
    return VolumeRenderer(cfg, 1.0)


def grey(dirs):
    return torch.full_like(dirs, 0.3)


def grads(loss, params):
    found = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
    return [g if g is not None else torch.zeros_like(p) for g, p in zip(found, params)]


def test_shape_only_render_has_the_value_of_the_render_and_no_albedo_gradient():
    ball = HazyBall()
    out = volume_renderer().render(ball, grey, cameras(), shape_only=True)
    assert torch.allclose(out.rgb_shape_only, out.rgb)
    density_grad, colour_grad = grads(out.rgb_shape_only.sum(), [ball.log_density, ball.colour])
    assert density_grad.abs() > 0 and torch.equal(colour_grad, torch.zeros(3))


def test_render_without_shape_only_has_no_copy():
    assert volume_renderer().render(HazyBall(), grey, cameras()).rgb_shape_only is None


def test_gate_keeps_the_geometry_gradient_and_cuts_colour_per_item():
    ball = HazyBall()
    out = volume_renderer().render(ball, grey, cameras(), shape_only=True)
    weights = torch.rand_like(out.rgb)
    params = [ball.log_density, ball.colour]
    full = grads((weights * out.rgb).sum(), params)
    first_item_colour = grads((weights * out.rgb)[:1].sum(), params)[1]

    image, gate = gate_colour(out.rgb, out.rgb_shape_only)
    assert torch.allclose(image, out.rgb, atol=1e-6)
    gate.copy_(torch.tensor([1.0, 0.0]))  # after the image was built, as the training step does
    gated = grads((weights * image).sum(), params)
    assert torch.allclose(gated[0], full[0], rtol=1e-5)
    assert torch.allclose(gated[1], first_item_colour, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(gated[1], full[1])


def test_mesh_renderer_shape_only_copy_cuts_the_albedo():
    box = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    colour = torch.tensor([0.3, -0.2, 1.0], requires_grad=True)
    surface = SimpleNamespace(geometry=lambda: (torch.tensor(box.vertices, dtype=torch.float32), torch.tensor(box.faces)),
                              albedo=lambda points: torch.sigmoid(colour).expand(points.shape[0], 3))
    cfg = SimpleNamespace(ambient=0.1, diffuse=0.9, light="point", headlight_lift=0.6)
    out = MeshRenderer(cfg).render(surface, grey, cameras(batch=1, size=16), shape_only=True)
    assert torch.allclose(out.rgb_shape_only, out.rgb)
    assert out.opacity.amax() == 1.0
    assert torch.equal(grads(out.rgb_shape_only.sum(), [colour])[0], torch.zeros(3))
    assert grads(out.rgb.sum(), [colour])[0].abs().sum() > 0


def test_colour_passes_at_or_below_the_bound():
    t = torch.tensor([100, 600, 601, 900])
    assert colour_passes(t, 0.6, 1000).tolist() == [1.0, 1.0, 0.0, 0.0]
    with pytest.raises(ConfigError, match="colour_t_max"):
        colour_passes(None, 0.6, 1000)


@pytest.mark.parametrize("colour_t_max, colour_learns", [(0.0, False), (1.0, True)])
def test_training_step_trains_albedo_only_from_renders_within_the_bound(tiny_config, tiny_sd_dir, colour_t_max, colour_learns):
    cfg = load_config(tiny_config, [f"guide.model={tiny_sd_dir}", f"objective.colour_t_max={colour_t_max}"], "a hamburger")
    session = build_session(cfg)
    train_step(session, 0)
    head = session.scene["field"].network[-1].weight.grad  # rows: density, then albedo r, g, b
    assert head[0].abs().sum().item() > 0
    assert (head[1:].abs().sum().item() > 0) == colour_learns


def test_colour_t_max_outside_unit_range_is_a_clear_error(tiny_config, tiny_sd_dir):
    with pytest.raises(ConfigError, match="objective.colour_t_max must lie in"):
        load_config(tiny_config, [f"guide.model={tiny_sd_dir}", "objective.colour_t_max=1.5"], "a hamburger")
