"""StableDiffusionGuide on the tiny diffusers checkpoints (real diffusers/transformers code paths)."""

from __future__ import annotations

import pytest
import torch

from sds3d.errors import ModelLoadError
from sds3d.guides.stable_diffusion import StableDiffusionGuide

CPU = torch.device("cpu")


def load(path, cache_dir):
    return StableDiffusionGuide.from_pretrained(str(path), CPU, "fp32", cache_dir=str(cache_dir))


@pytest.fixture
def guide(tiny_sd_dir, tmp_path):
    return load(tiny_sd_dir, tmp_path / "cache")


def sd_alphas_cumprod() -> torch.Tensor:
    """SD's scaled-linear schedule (beta 0.00085 -> 0.012, T = 1000), written out by hand."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, 0)


def count_calls(module, monkeypatch):
    calls = []
    original = module.forward

    def counted(*args, **kwargs):
        calls.append(args[0].shape if args else kwargs["sample"].shape)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, "forward", counted)
    return calls


def test_resolution_and_schedule_come_from_the_model(guide):
    # unet sample_size 8 x vae scale 2 (two VAE blocks): not SD's usual 512
    assert guide.unet.config.sample_size == 8
    assert guide.resolution == 16
    assert guide.prediction_type == "epsilon"
    assert guide.alphas_cumprod.dtype == torch.float32 and guide.alphas_cumprod.shape == (1000,)
    assert torch.allclose(guide.alphas_cumprod.double(), sd_alphas_cumprod(), atol=1e-6)


def test_encode_resizes_to_latents_and_is_differentiable(guide):
    torch.manual_seed(0)
    rgb = torch.rand(2, 3, 24, 20, requires_grad=True)
    latents = guide.encode(rgb)
    assert latents.shape == (2, 4, 8, 8)
    assert latents.dtype == torch.float32
    latents.square().sum().backward()
    assert rgb.grad is not None and rgb.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in guide.vae.parameters())


def test_embed_shape_and_cache_files(guide, tmp_path):
    emb = guide.embed(["a hamburger", "", "a cat, side view"])
    assert emb.shape == (3, 77, 16)
    assert emb.dtype == torch.float32
    assert not torch.equal(emb[0], emb[2])
    files = sorted((tmp_path / "cache" / "text_embeddings").glob("*.pt"))
    assert len(files) == 3


def test_embed_second_call_uses_cache_only(guide, monkeypatch):
    import transformers

    first = guide.embed(["a hamburger", "a cat"])

    def refuse(*args, **kwargs):
        raise AssertionError("text encoder loaded although every prompt is cached")

    monkeypatch.setattr(transformers.CLIPTextModel, "from_pretrained", refuse)
    monkeypatch.setattr(transformers.CLIPTokenizer, "from_pretrained", refuse)
    second = guide.embed(["a cat", "a hamburger"])
    assert torch.equal(second[0], first[1]) and torch.equal(second[1], first[0])


def test_embed_cache_survives_a_new_guide(tiny_sd_dir, tmp_path, monkeypatch):
    import transformers

    first = load(tiny_sd_dir, tmp_path / "c").embed(["a hamburger"])
    monkeypatch.setattr(transformers.CLIPTextModel, "from_pretrained", lambda *a, **k: pytest.fail("encoder loaded"))
    again = load(tiny_sd_dir, tmp_path / "c").embed(["a hamburger"])
    assert torch.equal(first, again)


def test_predict_noise_one_unet_call_for_all_conditions(guide, monkeypatch):
    torch.manual_seed(0)
    x_t = torch.randn(2, 4, 8, 8)
    t = torch.tensor([100, 700])
    embeddings = guide.embed(["a", "b", ""])[:, None].expand(3, 2, 77, 16).contiguous()
    calls = count_calls(guide.unet, monkeypatch)
    out = guide.predict_noise(x_t, t, embeddings)
    assert len(calls) == 1
    assert calls[0][0] == 6  # C * B rows in one batch
    assert out.shape == (3, 2, 4, 8, 8)


def test_predict_noise_equals_per_condition_unet_calls(guide):
    torch.manual_seed(1)
    x_t = torch.randn(2, 4, 8, 8)
    t = torch.tensor([30, 900])
    emb = guide.embed(["a hamburger", "a cat", ""])  # [3, 77, 16]
    embeddings = torch.stack([emb[:2], emb[1:]])  # condition 0 rows (hamburger, cat); 1: (cat, "")
    out = guide.predict_noise(x_t, t, embeddings)
    with torch.no_grad():
        for c in range(2):
            expected = guide.unet(x_t, t, encoder_hidden_states=embeddings[c]).sample
            assert torch.allclose(out[c], expected, atol=1e-5)
    assert not torch.allclose(out[0], out[1])


def test_predict_noise_converts_v_prediction_to_epsilon(tiny_sd_vpred_dir, tmp_path):
    guide = load(tiny_sd_vpred_dir, tmp_path / "cache")
    assert guide.prediction_type == "v_prediction"
    torch.manual_seed(2)
    x_t = torch.randn(2, 4, 8, 8)
    t = torch.tensor([50, 800])
    emb = guide.embed(["a hamburger", ""])[:, None].expand(2, 2, 77, 16)
    out = guide.predict_noise(x_t, t, emb)
    a = sd_alphas_cumprod()[t].float().view(2, 1, 1, 1)
    with torch.no_grad():
        for c in range(2):
            v = guide.unet(x_t, t, encoder_hidden_states=emb[c]).sample
            assert torch.allclose(out[c], a.sqrt() * v + (1 - a).sqrt() * x_t, atol=1e-5)


def test_missing_local_folder_is_model_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match="does-not-exist") as info:
        StableDiffusionGuide.from_pretrained("./does-not-exist", CPU, "fp32", cache_dir=str(tmp_path))
    assert info.value.hint


def test_unknown_hub_id_offline_is_model_load_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="nobody/no-such-model") as info:
        StableDiffusionGuide.from_pretrained("nobody/no-such-model", CPU, "fp32", cache_dir=str(tmp_path))
    assert "HF_HUB_OFFLINE" in str(info.value)
    assert info.value.hint


def test_a_prompt_longer_than_the_text_encoders_context_is_cut_with_a_warning(guide, caplog):
    long_prompt = " ".join(["a red cube on a blue table"] * 30)
    with caplog.at_level("WARNING", logger="sds3d"):
        embedding = guide.embed([long_prompt, "a red cube"])
    assert embedding.shape[1] == 77
    assert "more than the text encoder's 77: the rest is cut off" in caplog.text
    assert caplog.text.count("cut off") == 1  # the short prompt is not named


def test_the_text_embedder_alone_embeds_as_the_guide_without_loading_the_unet(tiny_sd_dir, tmp_path, monkeypatch):
    from diffusers import UNet2DConditionModel

    from sds3d.guides.base import TextEmbedder

    expected = load(tiny_sd_dir, tmp_path / "guide-cache").embed(["a hamburger"])
    monkeypatch.setattr(UNet2DConditionModel, "from_pretrained", lambda *a, **k: pytest.fail("UNet loaded"))
    alone = TextEmbedder.of(str(tiny_sd_dir), torch.device("cpu"), "fp32", str(tmp_path / "own-cache")).embed(["a hamburger"])
    assert torch.equal(alone, expected)
