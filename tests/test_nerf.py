import pytest
import torch
import torch.nn.functional as F

from sds3d.config import load_config
from sds3d.scene.hashgrid import active_levels_at
from sds3d.scene.nerf import NeRFField

SMALL = ["scene.encoding.levels=4", "scene.encoding.log2_table_size=10", "scene.encoding.base_resolution=4",
         "scene.encoding.max_resolution=32", "scene.encoding.start_level=2", "scene.encoding.start_step=4",
         "scene.encoding.update_steps=4", "scene.mlp_width=16", "scene.encoding.backend=torch"]


def scene_cfg(*overrides):
    return load_config(prompt="x", overrides=[*SMALL, *overrides]).scene


def fresh_field(*overrides, seed=0) -> NeRFField:
    torch.manual_seed(seed)
    return NeRFField(scene_cfg(*overrides))


def shell_points(n=256, low=0.2, high=0.7, seed=1):
    """Random points with |x| in [low, high]: away from the blob's centre, where it still falls steeply."""
    g = torch.Generator().manual_seed(seed)
    dirs = F.normalize(torch.randn(n, 3, generator=g), dim=-1)
    return dirs * (low + (high - low) * torch.rand(n, 1, generator=g))


def test_fresh_field_is_a_density_blob_at_the_origin():
    field = fresh_field()
    radii = torch.tensor([0.0, 0.25, 1.0, 1.9])
    with torch.no_grad():
        density = field.density(radii[:, None] * F.normalize(torch.tensor([[1.0, 2.0, -0.5]]), dim=-1))
    assert density[0] > 5.0  # ~softplus(blob_scale - 1)
    assert density[0] > density[1] > density[2] > density[3]
    assert density[2] < 1e-3 and density[3] < 1e-6


def test_density_bias_none_has_no_blob():
    field = fresh_field("scene.density_bias=none")
    with torch.no_grad():
        density = field.density(torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]))
    assert density[0] < 2.0 and torch.allclose(density[0], density[1], atol=0.1)


def test_query_returns_documented_shapes_and_ranges():
    points = shell_points(64)
    density, albedo, normals = fresh_field().query(points, with_normals=False)
    assert density.shape == (64,) and albedo.shape == (64, 3) and normals is None
    assert (density >= 0).all() and (albedo > 0).all() and (albedo < 1).all()


def test_analytic_normals_of_the_blob_point_outward():
    points = shell_points()
    _, _, normals = fresh_field().query(points, with_normals=True)
    assert torch.allclose(normals.norm(dim=-1), torch.ones(len(points)), atol=1e-5)
    cosine = (normals * F.normalize(points, dim=-1)).sum(-1)
    assert cosine.min().item() > 0.9


def test_finite_difference_normals_agree_with_analytic_ones():
    analytic = fresh_field()
    finite = NeRFField(scene_cfg("scene.normals=finite_difference", "scene.finite_difference_eps=0.001"))
    finite.load_state_dict(analytic.state_dict())
    points = shell_points()
    _, _, n_analytic = analytic.query(points, with_normals=True)
    _, _, n_finite = finite.query(points, with_normals=True)
    cosine = F.cosine_similarity(n_analytic, n_finite, dim=-1)
    assert cosine.min().item() > 0.9


def test_update_step_unlocks_levels_following_active_levels_at():
    field = fresh_field()
    enc = field.cfg.encoding
    for step in (0, 3, 4, 7, 8, 11, 12, 100):
        field.update_step(step)
        expected = active_levels_at(step, enc.levels, enc.start_level, enc.start_step, enc.update_steps)
        assert field.encoding.active_levels == expected, step
    assert [active_levels_at(s, 4, 2, 4, 4) for s in (0, 7, 8, 12, 100)] == [2, 2, 3, 4, 4]


def test_locked_levels_do_not_change_the_output():
    field = fresh_field()
    with torch.no_grad():
        field.encoding.table.uniform_(-1.0, 1.0)
        field.update_step(0)  # 2 of 4 levels active
        before = field.density(shell_points(32))
        offsets = field.encoding.offsets
        field.encoding.table[offsets[2]:] += 5.0  # perturb only the locked levels
        after = field.density(shell_points(32))
    assert torch.allclose(before, after)


@pytest.mark.parametrize("normals", ["analytic", "finite_difference"])
def test_query_under_no_grad_returns_detached_tensors(normals):
    field = fresh_field(f"scene.normals={normals}")
    with torch.no_grad():
        outputs = field.query(shell_points(32), with_normals=True)
    for tensor in outputs:
        assert not tensor.requires_grad and tensor.grad_fn is None


def test_query_with_grad_keeps_the_graph_through_the_normals():
    field = fresh_field()
    density, albedo, normals = field.query(shell_points(32), with_normals=True)
    assert density.requires_grad and albedo.requires_grad and normals.requires_grad
    normals.sum().backward()  # the orientation loss differentiates through the normals
    assert field.network[0].weight.grad is not None


def test_a_checkpoint_from_before_the_occupancy_grid_loads_and_the_grid_rebuilds():
    cfg = load_config(prompt="a red cube")
    old = {k: v for k, v in NeRFField(cfg.scene).state_dict().items() if not k.startswith("occupancy.")}
    field = NeRFField(cfg.scene)
    field.load_state_dict(old)  # strict: only the grid may be missing
    assert int(field.occupancy.built_at) == -1
    field.update_step(7)
    assert int(field.occupancy.built_at) == 7 and not field.occupancy.cells.all()
