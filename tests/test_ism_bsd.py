"""BSD (objectives.md §6.2), ISM (§6.1) and CSM (§6.3) pinned to their formulas: BSD's min-norm weight against a
brute-force search and its final gradient; ISM's DDIM-inverted trajectory replayed by hand with a fake
guide whose eps is a known function of (x_t, t), and CSM's classifier direction at the same x_t."""

from __future__ import annotations

import itertools

import pytest
import torch
from objective_fakes import SHAPE, B, TableGuide, constant_guide, hand_alphas, make_conditions, objective_config, per_item, redraw, run

from sds3d.objectives.bsd import BSD, min_norm_weight
from sds3d.objectives.csm import CSM
from sds3d.objectives.ism import ISM

ATOL = 1e-6


# ---------------------------------------------------------------- BSD


def brute_force_weight(c: torch.Tensor, d: torch.Tensor, points: int = 100001) -> torch.Tensor:
    """argmin over a grid on [0, 1] of ||a c + (1 - a) d||, per batch item (float64)."""
    grid = torch.linspace(0.0, 1.0, points, dtype=torch.float64)
    c, d = c.double().flatten(1), d.double().flatten(1)
    norms = (grid[:, None, None] * c + (1.0 - grid[:, None, None]) * d).norm(dim=-1)  # [points, B]
    return grid[norms.argmin(0)]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_bsd_min_norm_weight_matches_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(6, 3, 4, generator=g)
    c = 0.7 * d + torch.randn(6, 3, 4, generator=g)  # mixes interior and clipped optima
    a = min_norm_weight(c, d)
    assert a.shape == (6,)
    best = brute_force_weight(c, d)
    assert torch.allclose(a.double(), best, atol=2e-5)
    interior = (best > 0) & (best < 1)
    assert interior.any() and (~interior).any()  # both an interior optimum and a clipped one


def test_bsd_min_norm_weight_clips_to_zero_and_one():
    d = torch.randn(2, 5, generator=torch.Generator().manual_seed(4))
    c = torch.stack([2.0 * d[0], 0.5 * d[1]])
    # item 0: <d - c, d> / ||d - c||^2 = -1 -> 0; item 1: 0.5||d||^2 / 0.25||d||^2 = 2 -> 1
    assert torch.equal(min_norm_weight(c, d), torch.tensor([0.0, 1.0]))
    assert torch.equal(brute_force_weight(c, d).float(), torch.tensor([0.0, 1.0]))


def test_bsd_gradient_is_alpha_weighted_min_norm_mix():
    conditions = make_conditions()
    g = torch.Generator().manual_seed(5)
    null, r = torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)
    cond = torch.stack([null[0] - 0.02 * null[0] + 0.05 * r[0],  # interior optimum
                        null[1] + 2.0 * null[1] / 15.0])  # c = 2 d: clipped to 0
    guide = constant_guide(conditions, {"cond": cond, "empty": null})
    x = torch.randn(SHAPE, requires_grad=True)
    config = objective_config("bsd", config="bsd-sd")  # the authors' k = 15
    assert config.weighting == "alpha" and config.bsd.classifier_weight == 15.0
    out = run(BSD, config, guide, x, conditions, seed=6)

    assert len(guide.calls) == 1 and guide.calls[0][2].shape[0] == 2  # cond, null in one call
    t, _ = redraw(6, 20, 980, x)  # bsd-sd.yaml: t_max schedule starts at 0.98
    c, d = 15.0 * (cond - null), null
    a = []
    for i in range(B):
        diff = d[i] - c[i]
        a.append(float(((diff * d[i]).sum() / (diff * diff).sum()).clamp(0.0, 1.0)))
    assert 0.05 < a[0] < 0.95 and a[1] == 0.0
    a = torch.tensor(a)
    w = per_item(hand_alphas()[t].sqrt())
    expected = w * (per_item(a) * c + (1 - per_item(a)) * d)
    assert torch.allclose(x.grad, expected / B, atol=ATOL)
    assert out.stats["balance"] == pytest.approx(a.mean().item(), abs=1e-6)


# ---------------------------------------------------------------- ISM


def eps_null(x_t, t):
    return 0.3 * x_t + 0.001 * per_item(t.float())


def eps_cond(x_t, t):
    return -0.2 * x_t + 0.5


def eps_uncond(x_t, t):
    return 0.1 * x_t - 0.0005 * per_item(t.float())


def ism_guide(conditions):
    return TableGuide([(conditions.empty, eps_null), (conditions.cond, eps_cond), (conditions.negative, eps_uncond)])


def ddim(x, eps, a_from, a_to):
    """By hand: x0 = (x - sqrt(1 - a) eps) / sqrt(a), then x' = sqrt(a') x0 + sqrt(1 - a') eps."""
    x0 = (x - (1 - a_from) ** 0.5 * eps) / a_from**0.5
    return a_to**0.5 * x0 + (1 - a_to) ** 0.5 * eps


def ism_config(t_frac, steps, interval="0.08", start=0.0, offset=0.0, name="ism"):
    return objective_config(name, "objective.guidance_scale=7.5", "objective.weighting=sigma_over_alpha",
                            f"objective.t_min={t_frac}", f"objective.t_max={t_frac}", f"objective.ism.interval={interval}",
                            "objective.ism.inversion_stride=0.2", f"objective.ism.inversion_steps={steps}",
                            f"objective.ism.inversion_start={start}", f"objective.ism.offset_noise={offset}")


TRAJECTORIES = pytest.mark.parametrize(
    "t_frac, steps, interval, step, start, levels",
    [
        # s = 500 - 80 = 420; start max(420 - 5 * 200, 0) = 0; jumps 0 -> 200 -> 400 -> 420
        (0.5, 5, "0.08", 0, 0.0, [0, 200, 400, 420]),
        (0.5, 5, "0.08", 0, 0.02, [20, 220, 420]),  # no lower than inversion_start 0.02: 20
        (0.5, 1, "0.08", 0, 0.02, [220, 420]),  # start 420 - 200 = 220: one jump
        (0.5, 2, "0.08", 0, 0.0, [20, 220, 420]),
        (0.5, 2, "[0,0.1,0.08,120]", 60, 0.0, [10, 210, 410]),  # interval 0.09 at step 60: s = 410
        (0.05, 5, "0.08", 0, 0.0, [0]),  # s = max(50 - 80, 0) = 0: no jump
        (0.03, 5, "0.08", 0, 0.02, [0]),  # s = 0 lies under inversion_start: the start is s itself
    ],
)


def replay_inverted_noising(guide, x, t, levels, offset):
    """The guide calls checked against the DDIM-inverted path over ``levels`` replayed by hand; returns x_t and
    the null target eps(x_s; "", s)."""
    conditions, ac = make_conditions(), hand_alphas()
    _, noise = redraw(21, t, t, x, batch=1)  # one t for the whole batch, then the noise
    noise = noise + offset * torch.randn(1, SHAPE[1], 1, 1)  # the offset: one draw per channel for the batch
    # the guide calls: one null prediction per jump start, the null target at s, then (cond, negative) at t
    assert [int(call[1][0]) for call in guide.calls] == levels + [t]
    assert all(torch.equal(call[1], torch.full((B,), lvl)) for call, lvl in zip(guide.calls, levels + [t]))
    assert [call[2].shape[0] for call in guide.calls] == [1] * len(levels) + [2]
    assert all(torch.equal(call[2][0], conditions.empty) for call in guide.calls[:-1])

    x_cur = ac[levels[0]].sqrt() * x.detach() + (1 - ac[levels[0]]).sqrt() * noise  # x_0 noised to the start
    for i, (lo, hi) in enumerate(itertools.pairwise(levels)):
        assert torch.allclose(guide.calls[i][0], x_cur, atol=ATOL)
        x_cur = ddim(x_cur, eps_null(x_cur, torch.full((B,), lo)), ac[lo], ac[hi])
    assert torch.allclose(guide.calls[len(levels) - 1][0], x_cur, atol=ATOL)
    s = levels[-1]
    target = eps_null(x_cur, torch.full((B,), s))
    x_t = ddim(x_cur, target, ac[s], ac[t])
    assert torch.allclose(guide.calls[-1][0], x_t, atol=1e-5)
    return x_t, target


@TRAJECTORIES
@pytest.mark.parametrize("offset", [0.0, 0.1])
def test_ism_ddim_inverted_trajectory_and_gradient(t_frac, steps, interval, step, start, levels, offset):
    conditions = make_conditions()
    guide = ism_guide(conditions)
    x = torch.randn(SHAPE, requires_grad=True)
    out = run(ISM, ism_config(t_frac, steps, interval, start, offset), guide, x, conditions, step=step, seed=21)

    t = int(t_frac * 1000)
    x_t, target = replay_inverted_noising(guide, x, t, levels, offset)
    t_batch, ac = torch.full((B,), t), hand_alphas()
    eps_hat = eps_uncond(x_t, t_batch) + 7.5 * (eps_cond(x_t, t_batch) - eps_uncond(x_t, t_batch))
    w = ((1 - ac[t]) / ac[t]).sqrt()
    assert torch.allclose(x.grad, w * (eps_hat - target) / B, atol=1e-5)
    assert out.stats["s"] == float(levels[-1]) and out.stats["t"] == float(t)


@TRAJECTORIES
def test_csm_classifier_direction_at_the_ism_noising(t_frac, steps, interval, step, start, levels):
    """g = w(t) s (eps(x_t; y) - eps(x_t; y_neg)) at ISM's x_t: the same guide calls, no denoising target."""
    conditions = make_conditions()
    guide = ism_guide(conditions)
    x = torch.randn(SHAPE, requires_grad=True)
    out = run(CSM, ism_config(t_frac, steps, interval, start, 0.1, name="csm"), guide, x, conditions, step=step, seed=21)

    t = int(t_frac * 1000)
    x_t, _ = replay_inverted_noising(guide, x, t, levels, 0.1)
    t_batch, ac = torch.full((B,), t), hand_alphas()
    w = ((1 - ac[t]) / ac[t]).sqrt()
    assert torch.allclose(x.grad, w * 7.5 * (eps_cond(x_t, t_batch) - eps_uncond(x_t, t_batch)) / B, atol=1e-5)
    assert out.stats["s"] == float(levels[-1]) and out.stats["t"] == float(t)
