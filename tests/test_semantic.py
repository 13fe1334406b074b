"""Semantic region SDS: region masks (labels, pooling, dilation into background), the semantic map of
two analytic blobs, the merged gradient against objectives.md §5 on a fake guide, one guide call, and
each region's view suffix from its own object's frame."""

from dataclasses import replace
from types import SimpleNamespace
from typing import get_args

import pytest
import torch
from objective_fakes import (SHAPE, B, D, L, TableGuide, constant, hand_alphas, known_eps, make_conditions, objective_config,
                             per_item, redraw, run)

from sds3d.cameras import make_cameras
from sds3d.config import ASSETS_DIR, load_config
from sds3d.config_schema import SemanticBase
from sds3d.errors import ConfigError
from sds3d.guides.prompts import PromptSet, Regions, view_prompt
from sds3d.layout import load_layout
from sds3d.objectives import OBJECTIVES
from sds3d.objectives.semantic import BASES, SemanticSDS, region_masks
from sds3d.render.background import Background
from sds3d.render.volume import VolumeRenderer

PAIR = ASSETS_DIR / "layouts" / "cube-left-of-sphere.yaml"
ATOL = 1e-5


def column_map(batch: int = B) -> torch.Tensor:
    """[B, 3, 3, 2]: column 0 is region 0 (mass 0.9), column 2 region 1 (0.8), column 1 mostly background."""
    semantic = torch.zeros(batch, 3, 3, 2)
    semantic[:, :, 0, 0], semantic[:, :, 2, 1], semantic[:, :, 1, 0] = 0.9, 0.8, 0.1
    return semantic


def test_masks_follow_the_labels_without_dilation():
    masks = region_masks(column_map(), (3, 3), dilation=1)
    assert masks.shape == (2, B, 1, 3, 3)
    expected = torch.zeros(2, 3, 3)
    expected[0, :, 0], expected[1, :, 2] = 1, 1
    assert torch.equal(masks[:, 0, 0], expected)


def test_dilation_grows_masks_into_background_only():
    masks = region_masks(column_map(), (3, 3), dilation=3)[:, 0, 0]
    assert masks[0].tolist() == [[1, 1, 0]] * 3  # into the background column, never into region 1's
    assert masks[1].tolist() == [[0, 1, 1]] * 3


def test_pooling_to_a_smaller_size_keeps_any_region_mass():
    semantic = torch.zeros(1, 4, 4, 2)
    semantic[0, 0, 0, 1] = 0.9  # one render pixel of region 1 in the top-left 2x2 block
    semantic[0, 2:, 2:, 0] = 0.9
    masks = region_masks(semantic, (2, 2), dilation=1)[:, 0, 0]
    assert masks[1].tolist() == [[1, 0], [0, 0]] and masks[0].tolist() == [[0, 0], [0, 1]]


class TwoBlobs:
    """Opaque balls of radius 0.3 at the centres of the pair layout's boxes, carrying its region codes."""

    def __init__(self, layout):
        self.centres = torch.tensor([o.box.center for o in layout.objects])
        self.region_codes = layout.region_codes

    def query(self, points, with_normals):
        inside = (torch.cdist(points, self.centres) < 0.3).any(-1)
        return torch.where(inside, 1e3, 0.0), torch.full_like(points, 0.5), None


def test_semantic_map_of_two_blobs_splits_left_and_right():
    settings = SimpleNamespace(samples=96, importance_samples=0, chunk=4096, ambient=0.1, diffuse=0.9,
                               light="point", headlight_lift=0.6, deferred_shading=False)
    renderer = VolumeRenderer(settings, 1.0)
    background = Background(SimpleNamespace(kind="solid", color=[1.0, 1.0, 1.0], frequencies=4, mlp_width=16))
    camera = make_cameras(torch.zeros(1), torch.zeros(1), torch.tensor([3.0]), torch.tensor([40.0]), 16, 16)  # front: viewer's left is -y
    with torch.no_grad():
        out = renderer.render(TwoBlobs(load_layout(str(PAIR))), background, camera)
    semantic = out.semantic[0]  # [H, W, 2]
    assert semantic.shape == (16, 16, 2)
    assert torch.allclose(semantic.sum(-1), out.opacity[0, ..., 0], atol=1e-5)  # every blob point lies in a box
    row = semantic[8]
    assert row[4, 0] > 0.99 and row[4, 1] == 0  # the red cube's blob, left of centre
    assert row[11, 1] > 0.99 and row[11, 0] == 0  # the blue sphere's, right of centre
    assert row[7:9].sum() == 0 and semantic[0].sum() == 0  # the gap between them and the sky
    masks = region_masks(out.semantic, (16, 16), dilation=1)[:, 0, 0]
    assert masks[0, 8, :8].sum() > 0 and masks[0, :, 8:].sum() == 0 and masks[1, :, :8].sum() == 0


# ---------------------------------------------------------------- merged gradient on a fake guide


def region_conditions(semantic: torch.Tensor):
    conditions = make_conditions()
    cond = torch.stack([torch.full((B, L, D), 5.0), torch.full((B, L, D), 6.0)])
    return replace(conditions, regions=Regions(cond, semantic))


def fake_guide(conditions, eps):
    rows = {"cond": conditions.cond, "negative": conditions.negative, "empty": conditions.empty,
            "region0": conditions.regions.cond[0], "region1": conditions.regions.cond[1]}
    return TableGuide([(rows[name], constant(value)) for name, value in eps.items()])


def semantic_config(base: str, *overrides: str):
    return objective_config("semantic", f"objective.semantic.base={base}", f"layout.file={PAIR}", *overrides)


def test_sds_base_merges_by_masks_as_the_spec_formula():
    conditions = region_conditions(column_map())
    eps = known_eps(names=("cond", "negative", "region0", "region1"))
    guide = fake_guide(conditions, eps)
    x = torch.randn(SHAPE, requires_grad=True)
    config = semantic_config("sds", "objective.guidance_scale=7.5", "objective.semantic.dilation=1",
                             "objective.semantic.global_weight=0.3")
    run(SemanticSDS, config, guide, x, conditions, seed=4)

    t, noise = redraw(4, 20, 980, x)
    w = per_item(1.0 - hand_alphas()[t])
    g = {k: w * (eps["negative"] + 7.5 * (eps[k] - eps["negative"]) - noise) for k in ("region0", "region1", "cond")}
    masks = region_masks(column_map(), (3, 3), 1)
    expected = (masks[0] * g["region0"] + masks[1] * g["region1"]) / 2 + 0.3 * g["cond"]
    assert torch.allclose(x.grad * B, expected, atol=ATOL)


@pytest.mark.parametrize("base", ["sds", "csd", "nfsd", "sjc"])
def test_every_base_merges_its_own_per_region_gradients(base):
    """(1/K) sum_k M~_k g_base(y_k) + lambda g_base(y), each g_base from the base objective alone (same t, eps)."""
    conditions = region_conditions(column_map())
    eps = known_eps(names=("cond", "negative", "empty", "region0", "region1"))
    x = torch.randn(SHAPE, requires_grad=True)
    run(SemanticSDS, semantic_config(base), fake_guide(conditions, eps), x, conditions, seed=9)

    def alone(cond):
        probe = x.detach().clone().requires_grad_(True)
        run(OBJECTIVES[base], objective_config(base), fake_guide(conditions, eps), probe, replace(conditions, cond=cond), seed=9)
        return probe.grad * B

    masks = region_masks(column_map(), (3, 3), 5)
    expected = (masks[0] * alone(conditions.regions.cond[0]) + masks[1] * alone(conditions.regions.cond[1])) / 2
    assert torch.allclose(x.grad * B, expected + 0.5 * alone(conditions.cond), atol=ATOL)


def test_all_sub_prompts_share_one_guide_call_one_t_and_one_noise():
    conditions = region_conditions(column_map())
    guide = fake_guide(conditions, known_eps(names=("cond", "negative", "region0", "region1")))
    run(SemanticSDS, semantic_config("sds"), guide, torch.randn(SHAPE, requires_grad=True), conditions)
    assert len(guide.calls) == 1
    embeddings = guide.calls[0][2]
    expected = (conditions.cond, conditions.negative, *conditions.regions.cond)
    assert embeddings.shape[0] == 4 and all(torch.equal(e, r) for e, r in zip(embeddings, expected))


def test_without_a_region_map_only_the_global_term_remains():
    """K = 0 (no layout, as in the 2D playground): g = lambda g_base(y)."""
    conditions, eps = make_conditions(), known_eps(names=("cond", "negative"))
    guide = fake_guide(region_conditions(column_map()), eps)
    x = torch.randn(SHAPE, requires_grad=True)
    config = semantic_config("sds", "objective.guidance_scale=20", "objective.semantic.global_weight=0.25")
    run(SemanticSDS, config, guide, x, conditions, seed=2)
    t, noise = redraw(2, 20, 980, x)
    expected = 0.25 * per_item(1.0 - hand_alphas()[t]) * (eps["negative"] + 20.0 * (eps["cond"] - eps["negative"]) - noise)
    assert torch.allclose(x.grad * B, expected, atol=1e-4)


def test_an_unknown_base_is_a_config_error_naming_the_bases_and_the_schema_lists_the_registry():
    with pytest.raises(ConfigError, match="objective.semantic.base: unknown .*'bsd'") as err:
        semantic_config("bsd")
    assert "sds, sjc, csd, nfsd" in str(err.value.hint)
    assert tuple(BASES) == get_args(SemanticBase)


# ---------------------------------------------------------------- object-dependent view descriptor


class EmbedGuide:
    """embed gives each distinct prompt its own constant [1, 1] embedding."""

    def __init__(self):
        self.index = {}

    def embed(self, prompts):
        return torch.stack([torch.full((1, 1), float(self.index.setdefault(p, len(self.index)))) for p in prompts])


@pytest.mark.parametrize("object_views, cube, sphere", [(True, "side", "front"), (False, "front", "front")])
def test_each_region_takes_the_view_suffix_of_its_own_object(object_views, cube, sphere):
    cfg = load_config(overrides=[f"layout.file={PAIR}"]).prompt
    prompts = PromptSet(EmbedGuide(), cfg, load_layout(str(PAIR)), object_views)
    # Azimuth 40 from the origin is a front view; from the cube at -y it is 50 (side), from the sphere 25.
    camera = make_cameras(torch.zeros(1), torch.tensor([40.0]), torch.tensor([1.5]), torch.tensor([50.0]), 8, 8)
    conditions = prompts.conditions(camera, torch.zeros(1, 8, 8, 2))
    assert conditions.labels == ["front"]
    assert torch.equal(conditions.regions.cond[0, 0], prompts.embeddings[view_prompt("a red cube", cube)])
    assert torch.equal(conditions.regions.cond[1, 0], prompts.embeddings[view_prompt("a blue sphere", sphere)])
