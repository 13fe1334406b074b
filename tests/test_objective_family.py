"""SJC, CSD and NFSD pinned to their formulas (objectives.md §1, §3, §4) with a fake guide of known
predictions; the alpha / sigma_over_alpha weightings; inject's normalise-then-clamp order."""

from __future__ import annotations

import pytest
import torch
from objective_fakes import SHAPE, B, constant_guide, hand_alphas, known_eps, make_conditions, objective_config, per_item, redraw, run

from sds3d.objectives.base import inject, weight
from sds3d.objectives.csd import CSD
from sds3d.objectives.nfsd import NFSD
from sds3d.objectives.sjc import SJC

ATOL = 1e-6


# ---------------------------------------------------------------- weightings and inject


def test_alpha_and_sigma_over_alpha_weightings_on_hand_alphas():
    alphas = torch.tensor([0.9, 0.25, 0.64, 0.01])
    t = torch.tensor([1, 2, 3])  # a = 0.25, 0.64, 0.01
    assert torch.allclose(weight("alpha", alphas, t), torch.tensor([0.5, 0.8, 0.1]), atol=1e-7)
    # sigma / alpha = sqrt(1 - a) / sqrt(a): sqrt(.75)/.5, .6/.8, sqrt(.99)/.1
    expected = torch.tensor([0.75**0.5 / 0.5, 0.6 / 0.8, 0.99**0.5 / 0.1])
    assert torch.allclose(weight("sigma_over_alpha", alphas, t), expected, atol=1e-6)


def test_inject_normalises_over_the_whole_batch_then_clamps():
    x = torch.zeros(2, 2, requires_grad=True)
    g = torch.tensor([[3.0, 0.0], [0.0, 4.0]])  # ||g|| = 5 over the batch
    inject(x, g, clamp=0.7, normalize=True).backward()
    # normalised first: [[0.6, 0], [0, 0.8]], then clamped: 0.8 -> 0.7 (clamp-then-normalise would give 0.6, 0.8)
    assert torch.allclose(x.grad * 2, torch.tensor([[0.6, 0.0], [0.0, 0.7]]), atol=1e-6)


def test_inject_cleans_nan_before_normalising():
    x = torch.zeros(1, 3, requires_grad=True)
    inject(x, torch.tensor([[float("nan"), 3.0, 4.0]]), normalize=True).backward()
    assert torch.allclose(x.grad, torch.tensor([[0.0, 0.6, 0.8]]), atol=1e-6)


# ---------------------------------------------------------------- SJC


@pytest.mark.parametrize("var_red", [True, False])
def test_sjc_gradient_is_eps_hat_minus_noise_with_unit_weight(var_red):
    conditions, eps = make_conditions(), known_eps()
    guide = constant_guide(conditions, eps)
    config = objective_config("sjc", f"objective.sjc.var_red={str(var_red).lower()}", "objective.guidance_scale=7.5",
                              config="sjc")
    assert config.weighting == "uniform"
    x = torch.randn(SHAPE, requires_grad=True)
    run(SJC, config, guide, x, conditions, seed=11)

    t, noise = redraw(11, 10, 970, x)  # sjc.yaml: t in [0.01, 0.97]
    assert torch.equal(guide.calls[0][1], t)
    eps_hat = eps["negative"] + 7.5 * (eps["cond"] - eps["negative"])
    expected = eps_hat - noise if var_red else eps_hat
    assert torch.allclose(x.grad, expected / B, atol=ATOL)


# ---------------------------------------------------------------- CSD


def csd_config(*overrides):
    return objective_config("csd", "objective.weighting=sds", *overrides)


def test_csd_pure_is_weighted_classifier_direction():
    conditions, eps = make_conditions(), known_eps()
    guide = constant_guide(conditions, eps)
    x = torch.randn(SHAPE, requires_grad=True)
    out = run(CSD, csd_config("objective.guidance_scale=100"), guide, x, conditions, seed=3)  # CFG scale unused

    t, _ = redraw(3, 20, 980, x)
    w = per_item(1.0 - hand_alphas()[t])
    assert torch.allclose(x.grad, w * (eps["cond"] - eps["empty"]) / B, atol=ATOL)
    assert out.stats["negative_scale"] == 0.0


def embeddings_of_the_one_guide_call(objective_cls, config):
    """The embeddings of the single guide call one step of ``objective_cls`` makes (three of them)."""
    conditions, eps = make_conditions(), known_eps()
    guide = constant_guide(conditions, eps)
    run(objective_cls, config, guide, torch.randn(SHAPE, requires_grad=True), conditions)
    assert len(guide.calls) == 1
    embeddings = guide.calls[0][2]
    assert embeddings.shape[0] == 3
    return conditions, embeddings


def test_csd_one_guide_call_cond_uncond_null():
    conditions, embeddings = embeddings_of_the_one_guide_call(CSD, csd_config())
    for row, expected in zip(embeddings, (conditions.cond, conditions.negative, conditions.empty)):
        assert torch.equal(row, expected)


@pytest.mark.parametrize("step, beta", [(0, 0.0), (2500, 0.5), (5000, 1.0), (7000, 1.0)])
def test_csd_annealed_negative_schedule(step, beta):
    """negative 0 -> -1 and null -1 -> 0 over 5000 steps: g = w [(eps_y - eps_0) - beta (eps_neg - eps_0)]."""
    conditions, eps = make_conditions(), known_eps()
    guide = constant_guide(conditions, eps)
    x = torch.randn(SHAPE, requires_grad=True)
    config = csd_config("objective.csd.negative_scale=[0,0.0,-1.0,5000]", "objective.csd.null_scale=[0,-1.0,0.0,5000]")
    out = run(CSD, config, guide, x, conditions, step=step, seed=5)

    t, _ = redraw(5, 20, 980, x)
    w = per_item(1.0 - hand_alphas()[t])
    expected = w * ((eps["cond"] - eps["empty"]) - beta * (eps["negative"] - eps["empty"]))
    assert torch.allclose(x.grad, expected / B, atol=ATOL)
    assert out.stats["negative_scale"] == pytest.approx(-beta)


def test_csd_all_four_scales_and_noise_term():
    conditions, eps = make_conditions(), known_eps()
    guide = constant_guide(conditions, eps)
    x = torch.randn(SHAPE, requires_grad=True)
    config = csd_config("objective.csd.cond_scale=2.0", "objective.csd.negative_scale=-0.5",
                        "objective.csd.null_scale=-1.25", "objective.csd.noise_scale=-0.75")
    run(CSD, config, guide, x, conditions, seed=8)

    t, noise = redraw(8, 20, 980, x)
    w = per_item(1.0 - hand_alphas()[t])
    expected = w * (2.0 * eps["cond"] - 0.5 * eps["negative"] - 1.25 * eps["empty"] - 0.75 * noise)
    assert torch.allclose(x.grad, expected / B, atol=ATOL)


def test_csd_grad_normalize_gives_unit_norm_in_the_classifier_direction():
    conditions, eps = make_conditions(), known_eps()
    guide = constant_guide(conditions, eps)
    x = torch.randn(SHAPE, requires_grad=True)
    run(CSD, csd_config("objective.grad_normalize=true", "objective.weighting=uniform"), guide, x, conditions)

    g = x.grad * B
    assert g.norm().item() == pytest.approx(1.0, abs=1e-6)
    direction = eps["cond"] - eps["empty"]
    assert torch.allclose(g, direction / direction.norm(), atol=ATOL)


# ---------------------------------------------------------------- NFSD


def nfsd_config(*overrides):
    return objective_config("nfsd", "objective.guidance_scale=7.5", "objective.weighting=sds", *overrides)


def nfsd_expected(eps, t, scale, switch_t=200):
    """Per item: delta_D = eps_0 if t < 200 else eps_0 - eps_neg; g = w (delta_D + s (eps_y - eps_0))."""
    rows = []
    for i, ti in enumerate(t.tolist()):
        domain = eps["empty"][i] if ti < switch_t else eps["empty"][i] - eps["negative"][i]
        w = 1.0 - hand_alphas()[ti]
        rows.append(w * (domain + scale * (eps["cond"][i] - eps["empty"][i])))
    return torch.stack(rows)


def test_nfsd_domain_term_switches_per_batch_item():
    batch = 8
    conditions = make_conditions(batch)
    g = torch.Generator().manual_seed(1)
    eps = {k: torch.randn(batch, *SHAPE[1:], generator=g) for k in ("cond", "negative", "empty")}
    guide = constant_guide(conditions, eps)
    x = torch.randn(batch, *SHAPE[1:], requires_grad=True)
    run(NFSD, nfsd_config("objective.t_min=0.15", "objective.t_max=0.25"), guide, x, conditions, seed=2)

    t, _ = redraw(2, 150, 250, x)
    assert (t < 200).any() and (t >= 200).any()  # both branches inside one batch
    assert torch.allclose(x.grad, nfsd_expected(eps, t, 7.5) / batch, atol=ATOL)


@pytest.mark.parametrize("t_frac, small", [(0.199, True), (0.2, False)])
def test_nfsd_switch_boundary(t_frac, small):
    """t = 199 takes eps_0 alone; t = 200 = switch * T already subtracts the negative prediction."""
    conditions, eps = make_conditions(), known_eps()
    guide = constant_guide(conditions, eps)
    x = torch.randn(SHAPE, requires_grad=True)
    run(NFSD, nfsd_config(f"objective.t_min={t_frac}", f"objective.t_max={t_frac}"), guide, x, conditions)

    t = guide.calls[0][1]
    assert torch.equal(t, torch.full((B,), 199 if small else 200))
    w = per_item(1.0 - hand_alphas()[t])
    domain = eps["empty"] if small else eps["empty"] - eps["negative"]
    assert torch.allclose(x.grad, w * (domain + 7.5 * (eps["cond"] - eps["empty"])) / B, atol=ATOL)


def test_nfsd_switch_and_guidance_scale_from_config():
    conditions, eps = make_conditions(), known_eps()
    guide = constant_guide(conditions, eps)
    x = torch.randn(SHAPE, requires_grad=True)
    config = nfsd_config("objective.nfsd.switch=0.5", "objective.guidance_scale=[0,1.0,3.0,10]",
                         "objective.t_min=0.3", "objective.t_max=0.3")
    run(NFSD, config, guide, x, conditions, step=5)  # s = 2; t = 300 < 500: the small-t branch
    w = 1.0 - hand_alphas()[300]
    assert torch.allclose(x.grad, w * (eps["empty"] + 2.0 * (eps["cond"] - eps["empty"])) / B, atol=ATOL)


def test_nfsd_exactly_three_conditions_in_one_call():
    _, embeddings = embeddings_of_the_one_guide_call(NFSD, nfsd_config())
    assert {float(e[0, 0, 0]) for e in embeddings} == {1.0, 0.0, -1.0}  # cond, null, negative
