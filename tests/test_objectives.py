"""Objective helpers (CFG, weighting, timesteps, gradient injection), SDS and the registry."""

from __future__ import annotations

import math

import objective_fakes
import pytest
import torch

from sds3d.errors import ConfigError
from sds3d.guides.prompts import Conditions
from sds3d.objectives import OBJECTIVES, build_objective, describe
from sds3d.objectives.base import classifier_free_guidance, inject, weight
from sds3d.objectives.sds import SDS
from sds3d.objectives.timesteps import sample_t

T = 1000
B, C, H, W = 2, 4, 3, 3
L, D = 5, 6


def objective_config(*overrides: str, name: str = "sds"):
    return objective_fakes.objective_config(name, *overrides)


def hand_alphas() -> torch.Tensor:
    """A hand-written, strictly decreasing alphas_cumprod of length T (not SD's schedule)."""
    return torch.linspace(0.999, 0.001, T, dtype=torch.float32)


class FakeGuide:
    """predict_noise returns eps_cond for the cond embedding and eps_uncond for the negative one,
    recognised by content, and records every call."""

    def __init__(self, eps_cond: torch.Tensor, eps_uncond: torch.Tensor, conditions: Conditions):
        self.alphas_cumprod = hand_alphas()
        self.device = torch.device("cpu")
        self.eps = [(conditions.cond, eps_cond), (conditions.negative, eps_uncond)]
        self.calls = []

    def predict_noise(self, x_t, t, embeddings):
        self.calls.append((x_t.clone(), t.clone(), embeddings.clone()))
        out = []
        for emb in embeddings:
            out.append(next(eps for key, eps in self.eps if torch.equal(emb, key)))
        return torch.stack(out)


class DenoisingFakeGuide:
    """Predicts exactly the noise that was injected: solves x_t = sqrt(a) x0 + sqrt(1-a) eps for eps."""

    def __init__(self, x0: torch.Tensor):
        self.alphas_cumprod = hand_alphas()
        self.device = torch.device("cpu")
        self.x0 = x0.detach().clone()

    def predict_noise(self, x_t, t, embeddings):
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        eps = (x_t - a.sqrt() * self.x0) / (1.0 - a).sqrt()
        return eps[None].expand(embeddings.shape[0], *eps.shape)


def make_conditions() -> Conditions:
    cond = torch.full((B, L, D), 1.0)
    negative = torch.full((B, L, D), -1.0)
    return Conditions(cond=cond, negative=negative, empty=torch.zeros(B, L, D), no_view=torch.full((B, L, D), 2.0),
                      camera=torch.zeros(B, 16), labels=["front"] * B)


def known_eps():
    eps_cond = torch.full((B, C, H, W), 0.5)
    eps_uncond = torch.linspace(-1.0, 1.0, B * C * H * W).view(B, C, H, W)
    return eps_cond, eps_uncond


# ---------------------------------------------------------------- helpers


def test_cfg_is_standard_diffusers_form():
    eps_u = torch.tensor([1.0, -2.0, 0.5])
    eps_c = torch.tensor([3.0, 0.0, 0.5])
    # eps_u + 7.5 * (eps_c - eps_u), by hand
    expected = torch.tensor([1.0 + 7.5 * 2.0, -2.0 + 7.5 * 2.0, 0.5])
    assert torch.allclose(classifier_free_guidance(eps_u, eps_c, 7.5), expected)
    assert torch.equal(classifier_free_guidance(eps_u, eps_c, 1.0), eps_c)
    assert torch.equal(classifier_free_guidance(eps_u, eps_c, 0.0), eps_u)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("sds", [0.75, 0.36, 0.99]),  # 1 - a
        ("uniform", [1.0, 1.0, 1.0]),
        ("fantasia3d", [0.5 * 0.75, 0.8 * 0.36, 0.1 * 0.99]),  # sqrt(a) * (1 - a)
    ],
)
def test_weighting_on_hand_alphas(name, expected):
    alphas = torch.tensor([0.9, 0.25, 0.64, 0.01])
    t = torch.tensor([1, 2, 3])  # a = 0.25, 0.64, 0.01
    assert torch.allclose(weight(name, alphas, t), torch.tensor(expected), atol=1e-7)


def test_uniform_mix_blends_the_weighting_towards_one_over_its_schedule():
    objective = SDS(objective_config("objective.uniform_mix=[0.5,0,1,1.0]"), guide=None, total_steps=100)
    guide = type("Guide", (), {"alphas_cumprod": torch.tensor([0.9, 0.25, 0.64, 0.01])})
    t, x = torch.tensor([1, 2]), torch.zeros(2, 3)  # sds weights 0.75, 0.36
    assert torch.allclose(objective.weight(guide, t, x, step=50).flatten(), torch.tensor([0.75, 0.36]))
    assert torch.allclose(objective.weight(guide, t, x, step=75).flatten(), torch.tensor([0.875, 0.68]))
    assert torch.allclose(objective.weight(guide, t, x, step=100).flatten(), torch.tensor([1.0, 1.0]))


def test_uniform_mix_outside_zero_to_one_is_refused():
    with pytest.raises(ConfigError, match=r"objective.uniform_mix must lie in \[0, 1\], got 1.5"):
        objective_config("objective.uniform_mix=[0,0,1.5,1.0]")


def test_sample_t_range_inclusive_and_one_per_item():
    torch.manual_seed(0)
    t = sample_t(20000, 0.02, 0.035, 1000, "cpu")
    assert t.shape == (20000,)
    assert t.dtype == torch.long
    assert t.min().item() == 20 and t.max().item() == 35  # floor(0.035 * 1000) = 35, both ends reached
    assert set(t.tolist()) == set(range(20, 36))
    assert sample_t(3, 0.02, 0.98, 1000, "cpu").shape == (3,)


def test_sample_t_floors_fractional_bounds():
    torch.manual_seed(1)
    t = sample_t(5000, 0.0125, 0.0159, 1000, "cpu")  # [12.5, 15.9] -> [12, 15]
    assert set(t.tolist()) == {12, 13, 14, 15}
    assert torch.equal(sample_t(8, 0.5, 0.5, 10, "cpu"), torch.full((8,), 5))


# ---------------------------------------------------------------- inject


def test_inject_gradient_is_g_over_batch_and_value_half_norm():
    torch.manual_seed(0)
    x = torch.randn(3, 2, 4, 4, requires_grad=True)
    g = torch.randn(3, 2, 4, 4)
    loss = inject(x, g)
    loss.backward()
    assert torch.allclose(x.grad, g / 3, atol=1e-6)
    assert loss.item() == pytest.approx(0.5 * (g**2).sum().item() / 3, rel=1e-5)


def test_inject_cleans_non_finite_and_clamps():
    x = torch.zeros(2, 3, requires_grad=True)
    g = torch.tensor([[float("nan"), float("inf"), -float("inf")], [5.0, -5.0, 0.3]])
    inject(x, g, clamp=1.0).backward()
    expected = torch.tensor([[0.0, 0.0, 0.0], [1.0, -1.0, 0.3]]) / 2
    assert torch.allclose(x.grad, expected)
    assert torch.isnan(g[0, 0])  # the caller's tensor is left untouched


def test_inject_clamp_zero_disables_clipping():
    x = torch.zeros(1, 2, requires_grad=True)
    inject(x, torch.tensor([[100.0, -100.0]]), clamp=0.0).backward()
    assert torch.equal(x.grad, torch.tensor([[100.0, -100.0]]))


# ---------------------------------------------------------------- SDS


def run_sds(config, guide, x, conditions, step, seed=0):
    torch.manual_seed(seed)
    out = SDS(config, guide, 100)(guide, x, conditions, step)
    out.loss.backward()
    return out


def redraw(seed, low, high, x):
    """t then noise, in the order SDS draws them (timesteps() then randn_like)."""
    torch.manual_seed(seed)
    t = torch.randint(low, high + 1, (x.shape[0],))
    return t, torch.randn_like(x)


def test_sds_gradient_exact_with_fake_guide():
    conditions, (eps_c, eps_u) = make_conditions(), known_eps()
    guide = FakeGuide(eps_c, eps_u, conditions)
    x = torch.randn(B, C, H, W).requires_grad_(True)
    config = objective_config("objective.guidance_scale=7.5", "objective.weighting=sds")
    run_sds(config, guide, x, conditions, step=0, seed=123)

    t, noise = redraw(123, 20, 980, x)  # floor(0.02 * 1000), floor(0.98 * 1000)
    w = (1.0 - hand_alphas()[t]).view(B, 1, 1, 1)
    eps_hat = eps_u + 7.5 * (eps_c - eps_u)
    assert torch.equal(guide.calls[0][1], t)
    assert torch.allclose(x.grad, w * (eps_hat - noise) / B, atol=1e-6)


def test_sds_one_batched_call_cond_then_uncond():
    conditions, (eps_c, eps_u) = make_conditions(), known_eps()
    guide = FakeGuide(eps_c, eps_u, conditions)
    x = torch.randn(B, C, H, W).requires_grad_(True)
    run_sds(objective_config(), guide, x, conditions, step=0)

    assert len(guide.calls) == 1
    x_t, t, embeddings = guide.calls[0]
    assert embeddings.shape == (2, B, L, D)
    assert torch.equal(embeddings[0], conditions.cond)
    assert torch.equal(embeddings[1], conditions.negative)
    assert x_t.shape == x.shape and t.shape == (B,)


def test_sds_noising_is_ddpm_forward_process():
    conditions, (eps_c, eps_u) = make_conditions(), known_eps()
    guide = FakeGuide(eps_c, eps_u, conditions)
    x = torch.randn(B, C, H, W).requires_grad_(True)
    run_sds(objective_config(), guide, x, conditions, step=0, seed=7)

    t, noise = redraw(7, 20, 980, x)
    a = hand_alphas()[t].view(B, 1, 1, 1)
    assert torch.allclose(guide.calls[0][0], a.sqrt() * x.detach() + (1 - a).sqrt() * noise, atol=1e-6)


def test_sds_gradient_vanishes_when_prediction_is_the_noise():
    torch.manual_seed(3)
    x = torch.randn(B, C, H, W).requires_grad_(True)
    guide = DenoisingFakeGuide(x)
    out = run_sds(objective_config("objective.guidance_scale=100"), guide, x, make_conditions(), step=0)
    assert x.grad.abs().max().item() < 1e-3
    assert out.loss.item() < 1e-6


def test_sds_guidance_scale_and_t_max_schedules_evaluated_at_step():
    conditions, (eps_c, eps_u) = make_conditions(), known_eps()
    guide = FakeGuide(eps_c, eps_u, conditions)
    x = torch.randn(B, C, H, W).requires_grad_(True)
    config = objective_config(
        "objective.guidance_scale=[0,10.0,20.0,100]",  # 15 at step 50
        "objective.t_min=0.25",
        "objective.t_max=[0,0.75,0.25,50]",  # 0.25 from step 50 on: t == 250 always
        "objective.weighting=uniform",
    )
    run_sds(config, guide, x, conditions, step=50, seed=5)

    assert torch.equal(guide.calls[0][1], torch.full((B,), 250))
    _, noise = redraw(5, 250, 250, x)
    assert torch.allclose(x.grad, (eps_u + 15.0 * (eps_c - eps_u) - noise) / B, atol=1e-5)


def test_sds_grad_clip_clamps():
    conditions = make_conditions()
    guide = FakeGuide(torch.full((B, C, H, W), 50.0), torch.zeros(B, C, H, W), conditions)
    x = torch.zeros(B, C, H, W).requires_grad_(True)
    config = objective_config("objective.guidance_scale=10", "objective.grad_clip=0.5", "objective.weighting=uniform")
    run_sds(config, guide, x, conditions, step=0)
    # eps_hat - noise = 500 - noise >> 0.5 everywhere: every entry clamps to +0.5
    assert torch.allclose(x.grad, torch.full_like(x, 0.5 / B))


def test_sds_loss_is_monitoring_value_of_injected_gradient():
    conditions, (eps_c, eps_u) = make_conditions(), known_eps()
    guide = FakeGuide(eps_c, eps_u, conditions)
    x = torch.randn(B, C, H, W).requires_grad_(True)
    out = run_sds(objective_config("objective.weighting=fantasia3d"), guide, x, conditions, step=0, seed=9)
    g = x.grad * B
    assert out.loss.item() == pytest.approx(0.5 * (g**2).sum().item() / B, rel=1e-5)
    assert set(out.stats) >= {"t", "grad_norm"}
    assert math.isfinite(out.stats["grad_norm"])


# ---------------------------------------------------------------- registry


@pytest.mark.parametrize("name", sorted(set(OBJECTIVES) - {"vsd"}))  # vsd needs a UNet: tests/test_vsd.py
def test_registry_builds_every_objective_with_description(name):
    objective = build_objective(objective_config(name=name), FakeGuide(*known_eps(), make_conditions()), 100)
    assert isinstance(objective, torch.nn.Module)
    text = describe(name)
    assert text and "\n" not in text
