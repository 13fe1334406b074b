import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from sds3d.cameras import make_cameras
from sds3d.render.background import Background
from sds3d.render.shading import light_directions, pick_shading, shade, shade_composited
from sds3d.render.output import RenderOutput
from sds3d.render.volume import VolumeRenderer, ray_box_bounds, sample_pdf, weights_from_density

BG = (0.2, 0.4, 0.6)


class Sphere:
    """A solid ball at the origin with a constant albedo and analytic normals x/|x| (or flipped)."""

    def __init__(self, radius=0.5, density=1e3, albedo=(0.9, 0.1, 0.3), flip=False):
        self.radius, self.value, self.albedo, self.sign = radius, density, torch.tensor(albedo), -1.0 if flip else 1.0

    def query(self, points, with_normals):
        norm = points.norm(dim=-1)
        density = torch.where(norm < self.radius, self.value, 0.0)
        albedo = self.albedo.expand(points.shape[0], 3)
        return density, albedo, self.normals(points) if with_normals else None

    def normals(self, points, density=None):
        return self.sign * points / points.norm(dim=-1).clamp(min=1e-6)[:, None]


def renderer(samples=128, importance=0, radius=1.0, deferred=False, light="point"):
    cfg = SimpleNamespace(samples=samples, importance_samples=importance, chunk=4096, ambient=0.1, diffuse=0.9, light=light,
                          headlight_lift=0.6, deferred_shading=deferred)
    return VolumeRenderer(cfg, radius)


def solid_background():
    return Background(SimpleNamespace(kind="solid", color=list(BG), frequencies=4, mlp_width=16))


def front_camera(distance=3.0, size=3, fovy=20.0, batch=1):
    ones = torch.ones(batch)
    return make_cameras(0 * ones, 0 * ones, distance * ones, fovy * ones, size, size)


@pytest.mark.parametrize("importance", [0, 32])
def test_ray_through_the_sphere_centre_is_opaque_at_the_surface(importance):
    r = renderer(samples=128, importance=importance)
    with torch.no_grad():
        out = r.render(Sphere(), solid_background(), front_camera())
    spacing = 2.0 / 128  # the cube [-1, 1] along the ray, 128 stratified samples
    assert out.opacity[0, 1, 1, 0].item() == pytest.approx(1.0, abs=1e-4)
    assert abs(out.depth[0, 1, 1, 0].item() - (3.0 - 0.5)) <= spacing
    assert torch.allclose(out.rgb[0, 1, 1], torch.tensor([0.9, 0.1, 0.3]), atol=1e-3)


def test_ray_that_misses_the_sphere_sees_the_background():
    cams = front_camera()
    cams.c2w[:, 2, 3] += 0.8  # shift the camera up: the centre ray passes at height 0.8 > radius 0.5
    with torch.no_grad():
        out = renderer().render(Sphere(), solid_background(), cams)
    assert out.opacity[0, 1, 1, 0].item() == pytest.approx(0.0, abs=1e-6)
    assert torch.equal(out.rgb[0, 1, 1], torch.tensor(BG))


def test_weights_of_unit_density_over_unit_length_give_one_minus_e_inverse():
    weights = weights_from_density(torch.ones(1, 10), torch.full((1, 10), 0.1))
    assert weights.sum().item() == pytest.approx(1.0 - math.exp(-1.0), abs=1e-6)
    assert torch.all(weights[0, 1:] < weights[0, :-1])  # transmittance falls along the ray


def test_ray_box_bounds_enter_and_exit_the_cube():
    origins = torch.tensor([[3.0, 0.0, 0.0], [3.0, 2.0, 0.0]])
    dirs = torch.tensor([[-1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
    near, far = ray_box_bounds(origins, dirs, 1.0)
    assert near[0].item() == pytest.approx(2.0) and far[0].item() == pytest.approx(4.0)
    assert near[1].item() == far[1].item()  # the second ray misses


def test_ray_box_bounds_start_at_zero_inside_the_cube():
    near, far = ray_box_bounds(torch.zeros(1, 3), torch.tensor([[0.0, 0.0, 1.0]]), 1.0)
    assert near.item() == 0.0 and far.item() == pytest.approx(1.0)


@pytest.mark.parametrize("jitter", [False, True])
def test_sample_pdf_puts_samples_in_the_bin_of_a_delta_weight(jitter):
    torch.manual_seed(0)
    depths = torch.linspace(0.0, 1.0, 11)[None]
    weights = torch.zeros(1, 11)
    weights[0, 5] = 1.0  # the sample at depth 0.5, whose bin runs between midpoints 0.45 and 0.55
    fine = sample_pdf(depths, weights, 256, jitter)
    inside = ((fine >= 0.45 - 1e-6) & (fine <= 0.55 + 1e-6)).float().mean().item()
    assert fine.shape == (1, 256)
    assert inside > 0.98


def test_render_of_a_camera_batch_has_the_documented_shapes():
    cams = make_cameras(torch.tensor([0.0, 30.0]), torch.tensor([0.0, 90.0]), torch.full((2,), 3.0),
                        torch.full((2,), 40.0), width=5, height=4)
    with torch.no_grad():
        out = renderer(samples=16, importance=8).render(Sphere(), solid_background(), cams)
    assert isinstance(out, RenderOutput)
    assert out.rgb.shape == (2, 4, 5, 3) and out.opacity.shape == (2, 4, 5, 1) and out.depth.shape == (2, 4, 5, 1)
    assert out.normal is None and out.orient is None and out.semantic is None
    assert out.rgb.min() >= 0.0 and out.rgb.max() <= 1.0


@pytest.mark.parametrize("shading", ["diffuse", "textureless"])
def test_lit_shading_asks_for_normals_and_returns_them(shading):
    asked = []

    class Recording(Sphere):
        def query(self, points, with_normals):
            asked.append(with_normals)
            return super().query(points, with_normals)

        def normals(self, points, density=None):
            asked.append(True)
            return super().normals(points, density)

    with torch.no_grad():
        out = renderer(samples=16, importance=8).render(Recording(), solid_background(), front_camera(batch=2), shading)
    assert asked == [False, False, True]  # coarse and differentiable passes, then the visible samples' normals
    assert out.normal.shape == (2, 3, 3, 3) and out.orient.shape == (2, 3, 3, 1)


def test_albedo_render_returns_normals_when_asked():
    with torch.no_grad():
        out = renderer(samples=16).render(Sphere(), solid_background(), front_camera(), "albedo", with_normals=True)
    assert out.normal.shape == (1, 3, 3, 3)
    # the centre pixel sees the sphere's front, whose normal points back at the camera (+x)
    assert F.cosine_similarity(out.normal[0, 1, 1], torch.tensor([1.0, 0.0, 0.0]), dim=0).item() > 0.99


def test_orientation_penalty_is_zero_for_outward_normals_and_positive_for_flipped():
    cams = front_camera(size=5, fovy=30.0)
    with torch.no_grad():
        outward = renderer(samples=64).render(Sphere(), solid_background(), cams, with_normals=True)
        flipped = renderer(samples=64).render(Sphere(flip=True), solid_background(), cams, with_normals=True)
    assert outward.orient.abs().max().item() < 1e-6
    hit = flipped.opacity[..., 0] > 0.5
    assert hit.any() and torch.all(flipped.orient[..., 0][hit] > 0.1)


def test_textureless_shading_ignores_albedo():
    normals, light_dir = torch.tensor([[0.0, 0.0, 1.0]]), F.normalize(torch.tensor([[0.0, 1.0, 1.0]]), dim=-1)
    a = shade(torch.tensor([[0.9, 0.1, 0.2]]), normals, light_dir, "textureless", 0.1, 0.9)
    b = shade(torch.tensor([[0.1, 0.7, 0.4]]), normals, light_dir, "textureless", 0.1, 0.9)
    assert torch.equal(a, b)
    assert torch.allclose(a, torch.full((1, 3), 0.1 + 0.9 / math.sqrt(2)))


def test_albedo_shading_returns_the_albedo():
    albedo = torch.rand(7, 3)
    assert torch.equal(shade(albedo, None, torch.ones(7, 3), "albedo", 0.1, 0.9), albedo)


@pytest.mark.parametrize("mode", ["diffuse", "textureless"])
def test_light_behind_the_surface_gives_ambient_only(mode):
    albedo = torch.tensor([[0.5, 0.2, 0.8]])
    normals, points, light = torch.tensor([[0.0, 0.0, 1.0]]), torch.zeros(1, 3), torch.tensor([[0.0, 0.0, -5.0]])
    cfg = SimpleNamespace(light="point", headlight_lift=0.6)
    out = shade(albedo, normals, light_directions(cfg, points, light, torch.zeros(1, 3)), mode, 0.1, 0.9)
    base = albedo if mode == "diffuse" else torch.ones_like(albedo)
    assert torch.allclose(out, 0.1 * base)


@pytest.mark.parametrize("mode", ["diffuse", "textureless"])
def test_deferred_shading_lights_the_composited_albedo_once_from_the_mean_normal(mode):
    # a ray of opacity 0.8 over two samples whose normals disagree: lit once, from their mean direction
    albedo = torch.tensor([[0.3, 0.5, 0.4]])  # composited: already times the opacity
    normal, opacity = torch.tensor([[0.4, 0.0, 0.4]]), torch.tensor([[0.8]])
    light = torch.tensor([[0.0, 0.0, 1.0]])
    out = shade_composited(albedo, normal, opacity, light, mode, 0.1, 0.9)
    base = albedo if mode == "diffuse" else opacity.expand(1, 3)
    assert torch.allclose(out, base * (0.1 + 0.9 * math.sqrt(0.5)))
    assert torch.equal(shade_composited(albedo, None, opacity, light, "albedo", 0.1, 0.9), albedo)


class SoftSphere(Sphere):
    """A ball with a soft shell, whose samples' normals tilt away from the surface's by a fixed angle in
    alternating directions (as a learnt field's do): the surface itself is lit as the hard sphere's."""

    def query(self, points, with_normals):
        density = 40.0 * torch.sigmoid((self.radius - points.norm(dim=-1)) / 0.03)
        return density, self.albedo.expand(points.shape[0], 3), self.normals(points) if with_normals else None

    def normals(self, points, density=None):
        outward = points / points.norm(dim=-1, keepdim=True).clamp(min=1e-6)
        sideways = F.normalize(torch.cross(outward, torch.tensor([0.0, 1.0, 0.0]).expand_as(outward), dim=-1), dim=-1)
        sign = torch.where(torch.arange(points.shape[0]) % 2 == 0, 1.0, -1.0)[:, None]
        return math.cos(0.8) * outward + math.sin(0.8) * sign * sideways


def test_deferred_shading_lights_a_soft_shell_as_its_surface_and_per_sample_shading_darkens_it():
    cams = front_camera()  # headlight straight down the ray at the centre pixel (no lift along x): n.l = 1 there
    with torch.no_grad():
        deferred = renderer(deferred=True, light="headlight").render(SoftSphere(), solid_background(), cams, "textureless")
        per_sample = renderer(light="headlight").render(SoftSphere(), solid_background(), cams, "textureless")
    opacity = deferred.opacity[0, 1, 1, 0].item()
    assert opacity == pytest.approx(1.0, abs=1e-3)
    surface_light = 0.1 + 0.9 * F.normalize(torch.tensor([1.0, 0.0, 0.6]), dim=0)[0].item()
    assert deferred.rgb[0, 1, 1, 0].item() == pytest.approx(surface_light, abs=0.02)
    assert per_sample.rgb[0, 1, 1, 0].item() < surface_light - 0.1


def test_pick_shading_is_albedo_before_ambient_only_steps():
    cfg = SimpleNamespace(ambient_only_steps=100, diffuse_prob=1.0, textureless_prob=1.0)
    assert {pick_shading(step, cfg) for step in (0, 50, 99)} == {"albedo"}
    assert pick_shading(100, cfg) == "textureless"


@pytest.mark.parametrize("diffuse_prob, textureless_prob, expected", [
    (1.0, 1.0, "textureless"), (1.0, 0.0, "diffuse"), (0.0, 1.0, "albedo"), (0.0, 0.0, "albedo"),
])
def test_pick_shading_follows_the_probabilities(diffuse_prob, textureless_prob, expected):
    cfg = SimpleNamespace(ambient_only_steps=0, diffuse_prob=diffuse_prob, textureless_prob=textureless_prob)
    assert {pick_shading(step, cfg) for step in range(20)} == {expected}


def test_solid_background_returns_its_colour():
    dirs = F.normalize(torch.randn(2, 4, 5, 3), dim=-1)
    out = solid_background()(dirs)
    assert out.shape == (2, 4, 5, 3)
    assert torch.equal(out, torch.tensor(BG).expand(2, 4, 5, 3))


def test_environment_background_is_in_unit_range_with_the_right_shape():
    torch.manual_seed(0)
    bg = Background(SimpleNamespace(kind="environment", color=[1.0, 1.0, 1.0], frequencies=4, mlp_width=16))
    out = bg(F.normalize(torch.randn(2, 4, 5, 3), dim=-1))
    assert out.shape == (2, 4, 5, 3) and out.dtype == torch.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert out.requires_grad  # learned: gradients reach the MLP


def test_headlight_renders_a_ball_as_the_prior_s_world_does():
    """The training renders must look like the bundled prior's images: same light, ambient and strength."""
    from sds3d.config import load_config
    from sds3d.world.render import render_scenes
    from sds3d.world.scenes import COLORS, single

    render_cfg = load_config(prompt="a red sphere").render
    cams = make_cameras(torch.tensor([20.0]), torch.tensor([30.0]), torch.tensor([1.8]), torch.tensor([50.0]), 32, 32)
    world = render_scenes([single("sphere", "red")], cams, supersample=1, steps=96)
    ball = Sphere(radius=0.5, density=1e4, albedo=COLORS["red"])
    with torch.no_grad():
        out = VolumeRenderer(render_cfg, 1.0).render(ball, solid_background(), cams, shading="diffuse")
    inside = (world.mask[0] > 0.5) & (out.opacity[0, ..., 0] > 0.999)
    assert inside.sum() > 100
    # Samples sit up to a step inside the ball, so the normals (hence the shading) differ slightly.
    assert (out.rgb[0][inside] - world.rgb[0][inside]).abs().mean() < 0.01


def test_occupancy_skipping_renders_what_the_dense_sampler_renders():
    """A fresh field is an analytic blob (the network's output zeroed); with its grid built, the skipping
    sampler must render it as the dense one does, and skip most samples."""
    from sds3d.config import load_config
    from sds3d.scene.nerf import NeRFField

    cfg = load_config(prompt="a red cube")
    skipping = NeRFField(cfg.scene)
    torch.nn.init.zeros_(skipping.network[-1].weight)
    torch.nn.init.zeros_(skipping.network[-1].bias)
    skipping.update_step(0)
    dense = NeRFField(cfg.scene)
    dense.load_state_dict(skipping.state_dict())
    dense.occupied = None
    assert 0.01 < skipping.occupancy.cells.float().mean() < 0.3
    cams = make_cameras(torch.tensor([15.0, 40.0]), torch.tensor([0.0, 120.0]), torch.tensor([1.75, 1.5]),
                        torch.tensor([55.0, 40.0]), 24, 24)
    render = VolumeRenderer(cfg.render, cfg.scene.radius)
    torch.manual_seed(0)
    a = render.render(skipping, solid_background(), cams, "diffuse")
    torch.manual_seed(0)
    b = render.render(dense, solid_background(), cams, "diffuse")
    assert a.opacity.max() > 0.9
    torch.testing.assert_close(a.opacity, b.opacity, atol=2.5e-3, rtol=0)
    torch.testing.assert_close(a.rgb, b.rgb, atol=2.5e-3, rtol=0)
    a.rgb.sum().backward()  # and gradients flow through the kept samples
    assert skipping.network[-1].weight.grad.abs().sum() > 0
