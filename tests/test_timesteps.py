"""Timestep schedules (objectives.md §6.6): HiFA's square-root anneal, DreamTime's prior and its
deterministic descent (against a brute-force argmin), and timesteps()' dispatch on t_schedule."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from objective_fakes import hand_alphas, objective_config

from sds3d.objectives.timesteps import dreamtime, dreamtime_prior, sqrt_anneal, timesteps

T = 1000
PRIOR = (0.8, 0.5, 0.3, 0.1)  # [m1, m2, s1, s2] as fractions of T (the DreamTime defaults 800, 500, 300, 100)


# ---------------------------------------------------------------- sqrt_anneal


def test_sqrt_anneal_endpoints_and_formula():
    assert sqrt_anneal(0.02, 0.98, 0, 400) == pytest.approx(0.98)
    assert sqrt_anneal(0.02, 0.98, 400, 400) == pytest.approx(0.02)
    assert sqrt_anneal(0.02, 0.98, 100, 400) == pytest.approx(0.02 + 0.96 * 0.5)  # sqrt(1/4) = 1/2
    assert sqrt_anneal(0.1, 0.9, 200, 400) == pytest.approx(0.1 + 0.8 * (1 - math.sqrt(0.5)))
    assert sqrt_anneal(0.02, 0.98, 900, 400) == pytest.approx(0.02)  # clamped after the last step


def test_sqrt_anneal_is_monotone():
    values = [sqrt_anneal(0.02, 0.98, step, 50) for step in range(51)]
    assert all(a > b for a, b in itertools.pairwise(values))


# ---------------------------------------------------------------- DreamTime


def hand_prior(low, high):
    """W(t) = exp(-(t - 800)^2 / (2 300^2)) above 800, 1 on [500, 800], exp(-(t - 500)^2 / (2 100^2)) below; normalised."""
    weights = []
    for t in range(low, high + 1):
        if t > 800:
            weights.append(math.exp(-((t - 800) ** 2) / (2 * 300**2)))
        elif t < 500:
            weights.append(math.exp(-((t - 500) ** 2) / (2 * 100**2)))
        else:
            weights.append(1.0)
    total = sum(weights)
    return [w / total for w in weights]


def brute_force_dreamtime(low, high, step, total):
    """argmin_t |sum_{tau >= t} p(tau) - i/N|, the largest t among ties."""
    p = hand_prior(low, high)
    mass_above, running = {}, 0.0
    for t in range(high, low - 1, -1):
        running += p[t - low]
        mass_above[t] = running
    distance = {t: abs(mass - step / total) for t, mass in mass_above.items()}
    best = min(distance.values())
    return max(t for t, d in distance.items() if d <= best + 1e-12)


def test_dreamtime_prior_plateau_and_gaussian_shoulders():
    p = dreamtime_prior(20, 980, T, *PRIOR)
    assert p.shape == (961,)
    assert p.sum().item() == pytest.approx(1.0, abs=1e-12)
    plateau = p[500 - 20: 800 - 20 + 1]
    assert torch.all(plateau == plateau[0])  # equal values on [m2, m1] = [500, 800]
    top = plateau[0].item()
    for t in (801, 850, 900, 980):
        assert p[t - 20].item() == pytest.approx(top * math.exp(-((t - 800) ** 2) / (2 * 300**2)), rel=1e-9)
    for t in (20, 200, 400, 499):
        assert p[t - 20].item() == pytest.approx(top * math.exp(-((t - 500) ** 2) / (2 * 100**2)), rel=1e-9)
    assert torch.allclose(p, torch.tensor(hand_prior(20, 980), dtype=torch.float64), rtol=1e-9, atol=0)


def test_dreamtime_starts_at_top_ends_at_bottom_and_never_increases():
    total = 100
    schedule = [dreamtime(20, 980, T, PRIOR, step, total) for step in range(total + 1)]
    assert schedule[0] == 980
    assert schedule[-1] == 20
    assert all(a >= b for a, b in itertools.pairwise(schedule))
    assert dreamtime(20, 980, T, PRIOR, 500, total) == 20  # clamped after the last step


@pytest.mark.parametrize("step", [0, 10, 25, 50, 75, 90, 100])
def test_dreamtime_matches_brute_force_argmin(step):
    assert dreamtime(20, 980, T, PRIOR, step, 100) == brute_force_dreamtime(20, 980, step, 100)


def test_dreamtime_spends_most_steps_on_the_plateau():
    """Half of the prior's mass sits on [500, 800], so the middle of training lands there."""
    t_mid = dreamtime(20, 980, T, PRIOR, 50, 100)
    assert 500 <= t_mid <= 800


# ---------------------------------------------------------------- timesteps() dispatch


def config(schedule, *overrides):
    return objective_config("sds", f"objective.t_schedule={schedule}", *overrides)


def test_timesteps_random_is_per_item_in_range():
    torch.manual_seed(0)
    t = timesteps(config("random"), 64, hand_alphas(), 0, 100)
    assert t.shape == (64,) and t.dtype == torch.long
    assert t.min() >= 20 and t.max() <= 980
    assert len(set(t.tolist())) > 1  # one draw per batch item


@pytest.mark.parametrize("step, expected", [(0, 980), (25, 500), (100, 20)])
def test_timesteps_sqrt_anneal_shared_by_the_batch(step, expected):
    t = timesteps(config("sqrt_anneal"), 4, hand_alphas(), step, 100)
    assert torch.equal(t, torch.full((4,), expected))


def test_timesteps_sqrt_anneal_uses_scheduled_bounds():
    cfg = config("sqrt_anneal", "objective.t_max=[0,0.98,0.5,10]", "objective.t_min=0.1")
    # step 25 of 100: t_max = 0.5 (schedule done), t = 0.1 + 0.4 * 0.5 = 0.3
    assert torch.equal(timesteps(cfg, 3, hand_alphas(), 25, 100), torch.full((3,), 300))


@pytest.mark.parametrize("step", [0, 30, 60, 100])
def test_timesteps_dreamtime_shared_by_the_batch(step):
    t = timesteps(config("dreamtime"), 3, hand_alphas(), step, 100)
    assert torch.equal(t, torch.full((3,), brute_force_dreamtime(20, 980, step, 100)))


def test_timesteps_deterministic_schedules_draw_nothing():
    for schedule in ("sqrt_anneal", "dreamtime"):
        torch.manual_seed(1)
        timesteps(config(schedule), 2, hand_alphas(), 7, 100)
        after = torch.rand(1)
        torch.manual_seed(1)
        assert torch.equal(torch.rand(1), after)


def scaled_linear() -> torch.Tensor:
    """SD's schedule: betas linear in sqrt from 0.00085 to 0.012."""
    return torch.cumprod(1.0 - torch.linspace(0.00085**0.5, 0.012**0.5, T, dtype=torch.float64) ** 2, 0).float()


def squared_cosine() -> torch.Tensor:
    """The bundled prior's squaredcos_cap_v2 schedule, from its definition."""
    f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    betas = [min(1 - f((i + 1) / T) / f(i / T), 0.999) for i in range(T)]
    return torch.cumprod(1.0 - torch.tensor(betas, dtype=torch.float64), 0).float()


@pytest.mark.parametrize("alphas", [scaled_linear(), squared_cosine()], ids=["scaled-linear", "cosine"])
def test_alphabar_bounds_mean_the_same_noise_on_any_schedule(alphas):
    """t_unit alphabar: t_min and t_max are the first timesteps whose alphabar is at or below the values."""
    cfg = config("random", "objective.t_unit=alphabar", "objective.t_min=0.95", "objective.t_max=0.3")
    low, high = (next(t for t in range(T) if alphas[t] <= value) for value in (0.95, 0.3))
    torch.manual_seed(0)
    t = timesteps(cfg, 4000, alphas, 0, 100)
    assert t.min().item() == low and t.max().item() == high
    assert alphas[t].min() > 0.3 - 0.01 and alphas[t].max() <= 0.95


def test_the_same_fraction_is_a_different_noise_level_on_each_schedule():
    """Why the alphabar unit exists: t = 0.5 T is alphabar 0.28 on SD and 0.49 on the cosine schedule."""
    assert scaled_linear()[500].item() == pytest.approx(0.28, abs=0.01)
    assert squared_cosine()[500].item() == pytest.approx(0.49, abs=0.01)
