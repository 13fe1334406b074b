"""VSD (objectives.md §2) on the tiny diffusers models (real diffusers/peft code, CPU): the LoRA and
camera embedding train while the UNet stays frozen, the prior never sees the LoRA, the LoRA's target
and v-to-eps conversion, camera dropout, the exact gradient, state round-trips and rebuilding."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from sds3d.cameras import sample_cameras
from sds3d.config import load_config
from sds3d.errors import ConfigError
from sds3d.guides.prompts import PromptSet
from sds3d.guides.stable_diffusion import StableDiffusionGuide
from sds3d.objectives.vsd import VSD, lora_target

CPU = torch.device("cpu")
B = 2
LATENT = (B, 4, 8, 8)


def load(path):
    return StableDiffusionGuide.from_pretrained(str(path), CPU, "fp32", cache_dir=os.environ["SDS3D_CACHE"])


@pytest.fixture
def guide(tiny_sd_dir):
    return load(tiny_sd_dir)


@pytest.fixture
def vpred_guide(tiny_sd_vpred_dir):
    return load(tiny_sd_vpred_dir)


def run_config(*overrides, prompt="a cat"):
    return load_config(prompt=prompt, overrides=["objective.name=vsd", "objective.guidance_scale=7.5",
                                                   "objective.weighting=sds", *overrides])


def build(guide, *overrides, seed=0):
    """(objective, conditions) the way train.py builds them: PromptSet(...).conditions(sample_cameras(...))."""
    cfg = run_config(*overrides)
    torch.manual_seed(seed)
    objective = VSD(cfg.objective, guide, 100)
    conditions = PromptSet(guide, cfg.prompt).conditions(sample_cameras(cfg.cameras, 8, 8, batch_size=B))
    return objective, conditions


def sd_alphas_cumprod() -> torch.Tensor:
    """SD's scaled-linear schedule (beta 0.00085 -> 0.012, T = 1000), written out by hand."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, 0).float()


def frozen_state(guide):
    return {n: p.detach().clone() for n, p in guide.unet.named_parameters() if ".vsd." not in n}


def train_step(objective, guide, conditions, optimizer, seed):
    torch.manual_seed(seed)
    x = torch.randn(LATENT, requires_grad=True)
    result = objective(guide, x, conditions, 0)
    optimizer.zero_grad()
    (result.loss + result.aux["lora"]).backward()
    optimizer.step()
    return result


def lora_branch_output(objective, guide, x_t, t, embeddings, camera):
    """The UNet as the LoRA model, switched on by hand (not through the objective)."""
    unet = guide.unet
    unet.enable_adapters()
    unet.class_embedding = objective.camera_embedding
    try:
        with torch.no_grad():
            return unet(x_t, t, encoder_hidden_states=embeddings, class_labels=camera).sample
    finally:
        unet.class_embedding = None
        unet.disable_adapters()


def randomise_lora(objective, seed=1, scale=0.3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in objective.lora:
            p.copy_(scale * torch.randn(p.shape, generator=g))


# ---------------------------------------------------------------- parameters


def test_lora_parameters_trainable_and_unet_frozen(guide):
    objective, conditions = build(guide)
    unet_params = dict(guide.unet.named_parameters())
    lora_names = [n for n in unet_params if ".vsd." in n]
    assert lora_names and all(".lora_A." in n or ".lora_B." in n for n in lora_names)
    assert len(objective.lora) == len(lora_names)
    assert {id(p) for p in objective.lora} == {id(unet_params[n]) for n in lora_names}
    assert all(p.requires_grad for p in objective.lora)
    assert not any(p.requires_grad for n, p in unet_params.items() if ".vsd." not in n)
    own = {id(p) for p in objective.parameters()}
    assert own == {id(p) for p in objective.lora} | {id(p) for p in objective.camera_embedding.parameters()}
    assert objective.camera_embedding.linear_1.in_features == 16
    assert objective.camera_embedding.linear_2.out_features == guide.unet.time_embedding.linear_2.out_features
    objective(guide, torch.randn(LATENT, requires_grad=True), conditions, 0)
    assert all(p.requires_grad for p in objective.lora)  # still trainable after a step
    assert guide.unet.class_embedding is None


def test_one_optimizer_step_trains_lora_and_camera_only(guide):
    objective, conditions = build(guide, "objective.vsd.lr=0.001")
    assert objective.lr == 0.001
    frozen = frozen_state(guide)
    lora = [p.detach().clone() for p in objective.lora]
    camera = [p.detach().clone() for p in objective.camera_embedding.parameters()]
    optimizer = torch.optim.Adam(objective.parameters(), lr=objective.lr)

    train_step(objective, guide, conditions, optimizer, seed=0)
    # lora_B starts at zero, so only the B matrices get a gradient in the first step
    names = [n for n, _ in guide.unet.named_parameters() if ".vsd." in n]  # the order objective.lora was built in
    changed = {n: not torch.equal(p, q) for n, p, q in zip(names, objective.lora, lora)}
    assert all(c for n, c in changed.items() if ".lora_B." in n)
    # the camera embedding's output layer starts at zero too: it moves first, its input layer after
    moved = [not torch.equal(p, q) for p, q in zip(objective.camera_embedding.parameters(), camera)]
    assert moved == [False, False, True, True]  # linear_1 weight and bias, linear_2 weight and bias
    train_step(objective, guide, conditions, optimizer, seed=1)
    assert all(not torch.equal(p, q) for p, q in zip(objective.lora, lora))  # now A as well
    assert all(not torch.equal(p, q) for p, q in zip(objective.camera_embedding.parameters(), camera))
    for name, p in guide.unet.named_parameters():
        if ".vsd." not in name:
            assert torch.equal(p, frozen[name]), name
            assert p.grad is None


def test_lora_loss_does_not_reach_the_render(guide):
    objective, conditions = build(guide)
    x = torch.randn(LATENT, requires_grad=True)
    result = objective(guide, x, conditions, 0)
    assert result.aux["lora"].requires_grad
    assert torch.autograd.grad(result.aux["lora"], x, allow_unused=True) == (None,)


def test_prior_prediction_unaffected_by_training_the_lora(guide):
    torch.manual_seed(3)
    x_t, t = torch.randn(LATENT), torch.tensor([100, 700])
    cfg = run_config("objective.vsd.lr=0.01")
    embeddings = PromptSet(guide, cfg.prompt).conditions(sample_cameras(cfg.cameras, 8, 8, batch_size=B))
    stacked = torch.stack([embeddings.cond, embeddings.negative])
    before = guide.predict_noise(x_t, t, stacked)

    objective, conditions = build(guide, "objective.vsd.lr=0.01")
    lora_before = lora_branch_output(objective, guide, x_t, t, conditions.no_view, conditions.camera)
    optimizer = torch.optim.Adam(objective.parameters(), lr=objective.lr)
    for seed in range(3):
        train_step(objective, guide, conditions, optimizer, seed)
    lora_after = lora_branch_output(objective, guide, x_t, t, conditions.no_view, conditions.camera)

    assert (lora_after - lora_before).abs().max() > 1e-3  # the LoRA model did move
    assert torch.allclose(guide.predict_noise(x_t, t, stacked), before, atol=1e-6)  # the prior did not


# ---------------------------------------------------------------- targets and parametrisation


def test_lora_target_noise_for_eps_and_velocity_for_v(guide, vpred_guide):
    torch.manual_seed(0)
    x, noise, t = torch.randn(LATENT), torch.randn(LATENT), torch.tensor([5, 900])
    assert torch.equal(lora_target(guide, x, noise, t), noise)
    a = sd_alphas_cumprod()[t].view(-1, 1, 1, 1)
    assert torch.allclose(lora_target(vpred_guide, x, noise, t), a.sqrt() * noise - (1 - a).sqrt() * x, atol=1e-6)


def test_to_eps_converts_v_by_hand(guide, vpred_guide):
    torch.manual_seed(1)
    x_t, v, t = torch.randn(LATENT), torch.randn(LATENT), torch.tensor([10, 999])
    a = sd_alphas_cumprod()[t].view(-1, 1, 1, 1)
    assert torch.allclose(vpred_guide.to_eps(v, x_t, t), a.sqrt() * v + (1 - a).sqrt() * x_t, atol=1e-6)
    assert torch.equal(guide.to_eps(v, x_t, t), v)
    # and predict_noise applies it to the UNet's raw v output
    embeddings = torch.randn(1, B, 77, 16)
    with torch.no_grad():
        raw = vpred_guide.unet(x_t, t, encoder_hidden_states=embeddings[0]).sample
    expected = a.sqrt() * raw + (1 - a).sqrt() * x_t
    assert torch.allclose(vpred_guide.predict_noise(x_t, t, embeddings)[0], expected, atol=1e-5)


@pytest.mark.parametrize("dropout, kept", [(1.0, False), (0.0, True)])
def test_camera_dropout_in_the_lora_loss(guide, monkeypatch, dropout, kept):
    objective, conditions = build(guide, f"objective.vsd.camera_dropout={dropout}")
    calls = []
    original = guide.unet_output

    def spy(x_t, t, embeddings, **kwargs):
        calls.append(kwargs.get("class_labels"))
        return original(x_t, t, embeddings, **kwargs)

    monkeypatch.setattr(guide, "unet_output", spy)
    objective(guide, torch.randn(LATENT, requires_grad=True), conditions, 0)
    labelled = [c for c in calls if c is not None]
    assert len(labelled) == 2  # the LoRA's eps for the gradient, then its training loss
    assert torch.equal(labelled[0], conditions.camera)  # the gradient's LoRA prediction keeps the camera
    assert torch.equal(labelled[1], conditions.camera if kept else torch.zeros_like(conditions.camera))
    assert conditions.camera.abs().sum() > 0


# ---------------------------------------------------------------- the gradient


@pytest.mark.parametrize("vpred", [False, True])
def test_vsd_gradient_and_lora_loss_exact(guide, vpred_guide, vpred):
    guide = vpred_guide if vpred else guide
    objective, conditions = build(guide, "objective.vsd.camera_dropout=0.5")
    randomise_lora(objective)
    x = torch.randn(LATENT, requires_grad=True)
    torch.manual_seed(7)
    result = objective(guide, x, conditions, 0)
    result.loss.backward()

    torch.manual_seed(7)  # t, noise (gradient), then t', noise', camera keep (LoRA loss)
    t, noise = torch.randint(20, 981, (B,)), torch.randn(LATENT)
    t2, noise2, keep = torch.randint(0, 1000, (B,)), torch.randn(LATENT), (torch.rand(B) >= 0.5).float()
    a = sd_alphas_cumprod()[t].view(-1, 1, 1, 1)
    x_t = a.sqrt() * x.detach() + (1 - a).sqrt() * noise
    eps = guide.predict_noise(x_t, t, torch.stack([conditions.cond, conditions.negative]))
    raw = lora_branch_output(objective, guide, x_t, t, conditions.no_view, conditions.camera)
    eps_lora = a.sqrt() * raw + (1 - a).sqrt() * x_t if vpred else raw
    eps_hat = eps[1] + 7.5 * (eps[0] - eps[1])
    assert torch.allclose(x.grad * B, (1 - a) * (eps_hat - eps_lora), atol=1e-5)

    a2 = sd_alphas_cumprod()[t2].view(-1, 1, 1, 1)
    raw2 = lora_branch_output(objective, guide, a2.sqrt() * x.detach() + (1 - a2).sqrt() * noise2, t2,
                              conditions.no_view, conditions.camera * keep[:, None])
    target = a2.sqrt() * noise2 - (1 - a2).sqrt() * x.detach() if vpred else noise2
    assert result.aux["lora"].item() == pytest.approx(F.mse_loss(raw2, target).item(), rel=1e-5)


# ---------------------------------------------------------------- state and rebuilding


def test_state_dict_round_trips_into_a_fresh_vsd(guide, tiny_sd_dir):
    objective, conditions = build(guide, "objective.vsd.lr=0.01")
    optimizer = torch.optim.Adam(objective.parameters(), lr=objective.lr)
    for seed in range(2):
        train_step(objective, guide, conditions, optimizer, seed)
    state = objective.state_dict()

    fresh_guide = load(tiny_sd_dir)
    fresh, _ = build(fresh_guide, seed=99)
    assert not all(torch.equal(p, q) for p, q in zip(fresh.lora, objective.lora))
    fresh.load_state_dict(state)
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, state[key]), key
    torch.manual_seed(5)
    x_t, t = torch.randn(LATENT), torch.tensor([50, 600])
    expected = lora_branch_output(objective, guide, x_t, t, conditions.no_view, conditions.camera)
    got = lora_branch_output(fresh, fresh_guide, x_t, t, conditions.no_view, conditions.camera)
    assert torch.allclose(got, expected, atol=1e-6)


def test_building_twice_on_one_guide_replaces_the_adapter(guide):
    first, conditions = build(guide)
    second, _ = build(guide, seed=1)
    unet_params = dict(guide.unet.named_parameters())
    lora_ids = {id(p) for n, p in unet_params.items() if ".vsd." in n}
    assert lora_ids == {id(p) for p in second.lora}
    assert not lora_ids & {id(p) for p in first.lora}
    assert list(guide.unet.peft_config) == ["vsd"]
    optimizer = torch.optim.Adam(second.parameters(), lr=second.lr)
    train_step(second, guide, conditions, optimizer, seed=0)
    assert all(p.grad is not None for p in second.lora)


def test_guide_without_unet_is_a_config_error():
    class NoUnet:
        alphas_cumprod = torch.linspace(0.999, 0.001, 1000)
        device = CPU

    with pytest.raises(ConfigError, match="UNet"):
        VSD(run_config().objective, NoUnet(), 100)


def test_on_a_camera_conditioned_guide_the_lora_uses_the_guides_own_camera_embedding(tiny_prior_dir):
    from sds3d.guides.pixel import PixelGuide

    guide = PixelGuide.from_pretrained(str(tiny_prior_dir), CPU, "fp32", cache_dir=os.environ["SDS3D_CACHE"])
    assert guide.view_aware
    torch.nn.init.normal_(guide.unet.class_embedding.linear_2.weight, std=0.5)  # let the camera matter
    own = guide.unet.class_embedding
    cfg = run_config("prompt.negative=''", prompt="a red cube")
    objective = VSD(cfg.objective, guide, 100)
    assert objective.camera_embedding is None
    conditions = PromptSet(guide, cfg.prompt).conditions(sample_cameras(cfg.cameras, 16, 16, batch_size=B))
    x_t, t = torch.randn(B, 3, 16, 16), torch.tensor([300, 700])
    with torch.no_grad(), objective.lora_branch(guide.unet):
        assert guide.unet.class_embedding is own
        lora = guide.unet_output(x_t, t, conditions.no_view, class_labels=objective.camera(guide, conditions))
    assert guide.unet.class_embedding is own
    # lora_B starts at zero: the LoRA model starts equal to the frozen guide from the same cameras.
    frozen = guide.predict_noise(x_t, t, conditions.no_view[None], cameras=conditions.cameras)[0]
    torch.testing.assert_close(lora, frozen)
    assert not torch.allclose(frozen, guide.predict_noise(x_t, t, conditions.no_view[None])[0])
    loss = objective(guide, torch.randn(B, 3, 16, 16, requires_grad=True), conditions, 0).aux["lora"]
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in objective.lora)


def test_the_lora_model_starts_equal_to_the_frozen_guide(guide):
    """lora_B and the camera embedding's output layer start at zero: no camera or adapter term before training."""
    objective, conditions = build(guide)
    x_t, t = torch.randn(LATENT), torch.tensor([300, 700])
    with torch.no_grad(), objective.lora_branch(guide.unet):
        lora = guide.unet_output(x_t, t, conditions.no_view, class_labels=objective.camera(guide, conditions))
    torch.testing.assert_close(lora, guide.predict_noise(x_t, t, conditions.no_view[None])[0])
