"""Perp-Neg (objectives.md §6.5): the view weights and prompt mixes by azimuth, the perpendicular
guidance direction, PromptSet's interpolated conditions and negatives, and SDS's single guide call."""

from __future__ import annotations

import math

import pytest
import torch
from objective_fakes import SHAPE, B, constant_guide, hand_alphas, known_eps, objective_config, per_item, redraw, run
from objective_fakes import make_conditions as fake_conditions

from sds3d.cameras import make_cameras
from sds3d.config import load_config
from sds3d.errors import ConfigError
from sds3d.guides.prompts import PromptSet, perp_neg_views
from sds3d.objectives.base import direction, perpendicular
from sds3d.objectives.sds import SDS

ATOL = 1e-6
L, D = 7, 5


def f(a, b, c, r):
    """The shifted exponential decay f(r) = a e^(-b r) + c, written out."""
    return a * math.exp(-b * r) + c


F_FS = F_SF = (4.0, 0.5, -2.426)  # configs/base.yaml, threestudio's defaults
F_SB, F_FSB = (1.0, 0.5, -0.606), (1.0, 0.5, 0.967)


def prompt_config(*overrides):
    return load_config(prompt="a cat", overrides=["prompt.perp_neg.enabled=true", *overrides]).prompt


# ---------------------------------------------------------------- view weights and mixes


@pytest.mark.parametrize(
    "azimuth, label, mix, negatives",
    [
        (0.0, "front", {"front": 1.0, "side": 0.0}, [("front", -f(*F_FS, 1.0)), ("side", -f(*F_SF, 0.0))]),
        (45.0, "side", {"front": 0.5, "side": 0.5}, [("front", -f(*F_FS, 0.5)), ("side", -f(*F_SF, 0.5))]),
        (-45.0, "side", {"front": 0.5, "side": 0.5}, [("front", -f(*F_FS, 0.5)), ("side", -f(*F_SF, 0.5))]),
        # |a| = 90 belongs to the side-back branch: r = 2 - 90/90 = 1
        (90.0, "side", {"side": 1.0, "back": 0.0}, [("side", -f(*F_SB, 1.0)), ("front", -f(*F_FSB, 1.0))]),
        (-90.0, "side", {"side": 1.0, "back": 0.0}, [("side", -f(*F_SB, 1.0)), ("front", -f(*F_FSB, 1.0))]),
        (270.0, "side", {"side": 1.0, "back": 0.0}, [("side", -f(*F_SB, 1.0)), ("front", -f(*F_FSB, 1.0))]),
        (135.0, "side", {"side": 0.5, "back": 0.5}, [("side", -f(*F_SB, 0.5)), ("front", -f(*F_FSB, 0.5))]),
        (180.0, "back", {"side": 0.0, "back": 1.0}, [("side", -f(*F_SB, 0.0)), ("front", -f(*F_FSB, 0.0))]),
        (30.0, "front", {"front": 2 / 3, "side": 1 / 3}, [("front", -f(*F_FS, 2 / 3)), ("side", -f(*F_SF, 1 / 3))]),
    ],
)
def test_perp_neg_views_against_formulas(azimuth, label, mix, negatives):
    got_mix, got_negatives = perp_neg_views(azimuth, label, prompt_config().perp_neg)
    assert got_mix.keys() == mix.keys()
    for view, coefficient in mix.items():
        assert got_mix[view] == pytest.approx(coefficient, abs=1e-12)
    assert [v for v, _ in got_negatives] == [v for v, _ in negatives]
    for (_, got), (_, expected) in zip(got_negatives, negatives):
        assert got == pytest.approx(expected, abs=1e-12)


def test_perp_neg_default_weights_by_hand():
    """Numbers: front -f_fs(1) = -(4 e^-0.5 - 2.426); back: side -(1 - 0.606), front -(1 + 0.967)."""
    cfg = prompt_config().perp_neg
    _, front = perp_neg_views(0.0, "front", cfg)
    assert front[0][1] == pytest.approx(-(4 * math.exp(-0.5) - 2.426)) and front[1][1] == pytest.approx(-1.574)
    _, back = perp_neg_views(180.0, "back", cfg)
    assert back[0][1] == pytest.approx(-0.394) and back[1][1] == pytest.approx(-1.967)


def test_perp_neg_views_overhead_has_own_prompt_and_zero_weights():
    mix, negatives = perp_neg_views(37.0, "overhead", prompt_config().perp_neg)
    assert mix == {"overhead": 1.0}
    assert [w for _, w in negatives] == [0.0, 0.0]


def test_perp_neg_views_read_the_configured_coefficients():
    cfg = prompt_config("prompt.perp_neg.f_fs=[2.0,1.0,0.5]", "prompt.perp_neg.f_sf=[1.0,2.0,0.0]").perp_neg
    _, negatives = perp_neg_views(45.0, "side", cfg)
    assert negatives[0][1] == pytest.approx(-(2.0 * math.exp(-0.5) + 0.5))
    assert negatives[1][1] == pytest.approx(-math.exp(-1.0))


# ---------------------------------------------------------------- the guidance direction


def hand_perp(a, b):
    """a - <a, b>/||b||^2 b, one batch item at a time."""
    return torch.stack([ai - (ai * bi).sum() / (bi * bi).sum() * bi for ai, bi in zip(a, b)])


def test_perpendicular_is_orthogonal_per_item():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)
    p = perpendicular(a, b)
    assert torch.allclose(p, hand_perp(a, b), atol=ATOL)
    assert torch.allclose((p * b).flatten(1).sum(1), torch.zeros(B), atol=1e-5)
    assert torch.allclose(perpendicular(3.0 * b, b), torch.zeros_like(b), atol=1e-5)  # parallel part removed


def test_direction_with_negatives_by_hand():
    weights = torch.tensor([[-1.5, -0.25], [-0.5, 0.0]])  # [N = 2, B]
    conditions = fake_conditions(perp_neg_weights=weights)
    eps = known_eps()
    eps["perp_neg"] = torch.stack([eps["neg0"], eps["neg1"]])
    delta_pos = eps["cond"] - eps["negative"]
    expected = delta_pos.clone()
    for i, name in enumerate(("neg0", "neg1")):
        expected += per_item(weights[i]) * hand_perp(eps[name] - eps["negative"], delta_pos)
    assert torch.allclose(direction(eps, "negative", conditions), expected, atol=ATOL)
    # without negatives: the plain CFG direction
    assert torch.equal(direction(eps, "negative", fake_conditions()), delta_pos)


def test_sds_with_perp_neg_one_call_four_conditions_and_exact_gradient():
    weights = torch.tensor([[-2.0, -0.3], [-0.7, -1.1]])
    conditions = fake_conditions(perp_neg_weights=weights)
    eps = known_eps()
    guide = constant_guide(conditions, eps)
    x = torch.randn(SHAPE, requires_grad=True)
    run(SDS, objective_config("sds", "objective.guidance_scale=7.5"), guide, x, conditions, seed=4)

    assert len(guide.calls) == 1
    embeddings = guide.calls[0][2]
    assert embeddings.shape[0] == 4
    for row, expected in zip(embeddings, (conditions.cond, conditions.negative, *conditions.perp_neg.embeddings)):
        assert torch.equal(row, expected)
    t, noise = redraw(4, 20, 980, x)
    delta_pos = eps["cond"] - eps["negative"]
    delta = delta_pos + sum(per_item(weights[i]) * hand_perp(eps[n] - eps["negative"], delta_pos)
                            for i, n in enumerate(("neg0", "neg1")))
    w = per_item(1.0 - hand_alphas()[t])
    assert torch.allclose(x.grad, w * (eps["negative"] + 7.5 * delta - noise) / B, atol=ATOL)


# ---------------------------------------------------------------- PromptSet


class EmbedGuide:
    """embed gives every distinct prompt its own random embedding [L, D]."""

    def __init__(self):
        self.table = {}
        self.generator = torch.Generator().manual_seed(0)

    def embed(self, prompts):
        for p in prompts:
            if p not in self.table:
                self.table[p] = torch.randn(L, D, generator=self.generator)
        return torch.stack([self.table[p] for p in prompts])


def test_prompt_set_perp_neg_conditions():
    guide = EmbedGuide()
    cfg = prompt_config()
    elevation = torch.tensor([0.0, 10.0, 0.0, -5.0, 75.0])
    azimuth = torch.tensor([0.0, 45.0, -120.0, 170.0, 30.0])
    cameras = make_cameras(elevation, azimuth, torch.full((5,), 2.0), torch.full((5,), 50.0), 8, 8)
    conditions = PromptSet(guide, cfg).conditions(cameras)

    assert conditions.labels == ["front", "side", "side", "back", "overhead"]
    view = {v: guide.table[f"a cat, {v} view"] for v in ("front", "side", "back", "overhead")}
    assert conditions.perp_neg.embeddings.shape == (2, 5, L, D)
    assert conditions.perp_neg.weights.shape == (2, 5)
    for i, (a, label) in enumerate(zip(azimuth.tolist(), conditions.labels)):
        mix, negatives = perp_neg_views(a, label, cfg.perp_neg)
        assert torch.allclose(conditions.cond[i], sum(c * view[v] for v, c in mix.items()), atol=ATOL)
        for n, (v, w) in enumerate(negatives):
            assert torch.equal(conditions.perp_neg.embeddings[n, i], view[v])
            assert conditions.perp_neg.weights[n, i].item() == pytest.approx(w, abs=1e-6)
    # by hand at 45 degrees: half front, half side
    assert torch.allclose(conditions.cond[1], 0.5 * view["front"] + 0.5 * view["side"], atol=ATOL)
    assert torch.equal(conditions.cond[4], view["overhead"])
    assert torch.equal(conditions.negative, guide.table[""].expand(5, L, D))
    assert torch.equal(conditions.no_view, guide.table["a cat"].expand(5, L, D))


def test_prompt_set_without_perp_neg_has_none():
    guide = EmbedGuide()
    cameras = make_cameras(torch.zeros(2), torch.tensor([0.0, 90.0]), torch.full((2,), 2.0), torch.full((2,), 50.0), 8, 8)
    conditions = PromptSet(guide, prompt_config("prompt.perp_neg.enabled=false")).conditions(cameras)
    assert conditions.perp_neg is None
    assert torch.equal(conditions.cond[1], guide.table["a cat, side view"])


def test_perp_neg_needs_view_dependent_prompts():
    with pytest.raises(ConfigError, match="view"):
        prompt_config("prompt.view_dependent=false")


def test_perp_neg_refused_by_a_guide_without_text_embeddings():
    guide = EmbedGuide()
    guide.interpolates_embeddings = False
    with pytest.raises(ConfigError, match="Perp-Neg"):
        PromptSet(guide, prompt_config())
