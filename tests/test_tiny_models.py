"""Sanity checks for the tiny Stable Diffusion test fixtures."""

from __future__ import annotations

import os

import torch

PROMPT = "a hamburger, front view"


def _load(path):
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    return (
        UNet2DConditionModel.from_pretrained(path, subfolder="unet"),
        AutoencoderKL.from_pretrained(path, subfolder="vae"),
        CLIPTextModel.from_pretrained(path, subfolder="text_encoder"),
        CLIPTokenizer.from_pretrained(path, subfolder="tokenizer"),
        DDIMScheduler.from_pretrained(path, subfolder="scheduler"),
    )


def _scheduler_config(path):
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_pretrained(path, subfolder="scheduler").config


def test_tiny_sd_loads_and_runs(tiny_sd_dir, tiny_sd_vpred_dir):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert (tiny_sd_dir / "model_index.json").is_file()
    unet, vae, text_encoder, tokenizer, scheduler = _load(tiny_sd_dir)

    assert scheduler.config.prediction_type == "epsilon"
    assert scheduler.config.num_train_timesteps == 1000
    vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)
    assert unet.config.sample_size * vae_scale == 16
    assert _scheduler_config(tiny_sd_vpred_dir)["prediction_type"] == "v_prediction"

    ids = tokenizer(
        [PROMPT, ""],
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    assert ids.shape == (2, 77)
    with torch.no_grad():
        emb = text_encoder(ids)[0]
        assert emb.shape == (2, 77, unet.config.cross_attention_dim)
        latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
        t = torch.tensor([500, 500])
        out = unet(latents, t, encoder_hidden_states=emb).sample
        image = vae.decode(latents / vae.config.scaling_factor).sample
    assert out.shape == (2, 4, 8, 8)
    assert torch.isfinite(out).all()
    assert image.shape == (2, 3, 16, 16)


def test_tiny_tokenizer_round_trips(tiny_sd_dir):
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tiny_sd_dir, subfolder="tokenizer")
    assert tokenizer.model_max_length == 77

    content = tokenizer(PROMPT, add_special_tokens=False).input_ids
    assert content, "prompt tokenised to nothing"
    # CLIP's unk token is <|endoftext|>: none may appear inside the prompt.
    assert tokenizer.unk_token_id not in content
    assert tokenizer.eos_token_id not in content

    ids = tokenizer(PROMPT).input_ids
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    decoded = tokenizer.decode(ids, skip_special_tokens=True)
    # CLIP's decoder puts a space before punctuation that ends a word ("hamburger ,").
    assert decoded.replace(" ,", ",") == PROMPT
