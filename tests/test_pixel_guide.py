"""PixelGuide on a tiny DeepFloyd-IF-shaped model and on the (untrained) bundled prior, and load_guide's
choice between pixel and latent guides."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from sds3d.prior.model import MAX_TOKENS
from sds3d.config_schema import GuideConfig
from sds3d.errors import ConfigError
from sds3d.guides import load_guide
from sds3d.guides.pixel import PixelGuide
from sds3d.guides.stable_diffusion import StableDiffusionGuide

CPU = torch.device("cpu")


def load(path, cache_dir):
    return PixelGuide.from_pretrained(str(path), CPU, "fp32", cache_dir=str(cache_dir))


@pytest.fixture
def if_guide(tiny_if_dir, tmp_path):
    return load(tiny_if_dir, tmp_path / "cache")


@pytest.fixture
def prior_guide(tiny_prior_dir, tmp_path):
    return load(tiny_prior_dir, tmp_path / "cache")


@pytest.mark.parametrize("fixture, expected", [
    ("tiny_if_dir", PixelGuide), ("tiny_prior_dir", PixelGuide), ("tiny_sd_dir", StableDiffusionGuide),
])
def test_load_guide_picks_pixel_guide_without_vae(fixture, expected, request, tmp_path):
    model = request.getfixturevalue(fixture)
    cfg = OmegaConf.merge(OmegaConf.structured(GuideConfig), {"model": str(model), "dtype": "fp32", "cache_dir": str(tmp_path)})
    guide = load_guide(cfg, CPU)
    assert type(guide) is expected
    assert (model / "vae").is_dir() == (expected is StableDiffusionGuide)


def test_if_resolution_is_unet_sample_size(if_guide):
    assert if_guide.unet.config.sample_size == 16
    assert if_guide.resolution == 16
    assert if_guide.prediction_type == "epsilon"
    assert if_guide.alphas_cumprod.shape == (1000,) and if_guide.alphas_cumprod.dtype == torch.float32


def test_if_encode_resizes_to_minus_one_one_and_is_differentiable(if_guide):
    torch.manual_seed(0)
    rgb = torch.rand(2, 3, 40, 24, requires_grad=True)
    x = if_guide.encode(rgb)
    assert x.shape == (2, 3, 16, 16)
    assert x.min() >= -1.0 and x.max() <= 1.0 and x.min() < -0.5 and x.max() > 0.5
    assert torch.allclose(if_guide.encode(torch.zeros(1, 3, 16, 16)), torch.full((1, 3, 16, 16), -1.0))
    assert torch.allclose(if_guide.encode(torch.ones(1, 3, 32, 32)), torch.ones(1, 3, 16, 16))
    x.square().sum().backward()
    assert rgb.grad is not None and rgb.grad.abs().sum() > 0


def test_if_embed_is_t5_with_attention_mask(if_guide, tiny_if_dir):
    import transformers

    prompts = ["a red cube", "a blue sphere on top of a green cube, front view"]
    emb = if_guide.embed(prompts)
    assert emb.shape == (2, 77, 16) and emb.dtype == torch.float32
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tiny_if_dir), subfolder="tokenizer")
    encoder = transformers.T5EncoderModel.from_pretrained(str(tiny_if_dir), subfolder="text_encoder").eval()
    tokens = tokenizer(prompts, padding="max_length", max_length=77, return_tensors="pt")
    with torch.no_grad():
        masked = encoder(tokens.input_ids, attention_mask=tokens.attention_mask).last_hidden_state
        unmasked = encoder(tokens.input_ids).last_hidden_state
    assert torch.allclose(emb, masked, atol=1e-5)
    assert not torch.allclose(emb, unmasked, atol=1e-3)  # the mask matters, so it was used


def test_if_predict_noise_keeps_eps_channels_of_learned_variance_output(if_guide):
    torch.manual_seed(1)
    x_t = torch.randn(2, 3, 16, 16)
    t = torch.tensor([40, 850])
    emb = if_guide.embed(["a red cube", "a cat", ""])
    embeddings = torch.stack([emb[:2], emb[1:]])  # [C=2, B=2, 77, 16]
    out = if_guide.predict_noise(x_t, t, embeddings)
    assert out.shape == (2, 2, 3, 16, 16)
    with torch.no_grad():
        for c in range(2):
            raw = if_guide.unet(x_t, t, encoder_hidden_states=embeddings[c]).sample
            assert raw.shape == (2, 6, 16, 16)
            assert torch.allclose(out[c], raw[:, :3], atol=1e-5)
            assert not torch.allclose(out[c], raw[:, 3:], atol=1e-3)


def test_prior_embeds_world_captions(prior_guide):
    emb = prior_guide.embed(["a red cube to the left of a blue sphere, front view", "a green torus", ""])
    assert emb.shape == (3, MAX_TOKENS, 64)  # text width 64
    assert torch.isfinite(emb).all()
    assert not torch.allclose(emb[0], emb[1])
    assert prior_guide.resolution == 16


def test_prior_rejects_unknown_words_naming_them(prior_guide):
    with pytest.raises(ConfigError) as info:
        prior_guide.embed(["a red hamburger"])
    unknown, known = str(info.value).split("does not know the word(s):")[1].split("; it knows:")
    assert unknown.split() == ["hamburger"]  # "a" and "red" are known
    known = known.split()
    assert {"cube", "sphere", "red", "blue", "left", "top"} <= set(known)
    assert "dreamfusion-sd" in info.value.hint


def test_clip_tokenizer_with_unk_equal_to_eos_passes_vocabulary_check(tiny_sd_dir, tmp_path):
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tiny_sd_dir), subfolder="tokenizer")
    assert tokenizer.unk_token_id == tokenizer.eos_token_id
    guide = StableDiffusionGuide.from_pretrained(str(tiny_sd_dir), CPU, "fp32", cache_dir=str(tmp_path))
    emb = guide.embed(["a red hamburger, front view", "a photo of a cat's hat-stand, 4k."])
    assert emb.shape == (2, 77, 16)
