"""Guides built from architecture configs alone, with random weights: real-size step timings without a
download (`sds3d bench speed --random-weights`). Their predictions mean nothing; their cost is real.

The text encoder is not built and no tokenizer is needed: each prompt becomes a fixed random
embedding of the encoder's output shape ([77, cross_attention_dim], e.g. [77, 1024] for SD 2.1-base),
the tensor the UNet sees, so every UNet call has its real size.
"""

import hashlib
import json
import logging
from pathlib import Path
from typing import List

import torch

from sds3d.config import ASSETS_DIR
from sds3d.errors import ModelLoadError
from sds3d.guides.base import prepare_unet, resolve_dtype
from sds3d.guides.pixel import PixelGuide
from sds3d.guides.stable_diffusion import StableDiffusionGuide

log = logging.getLogger("sds3d")

# Hub ids whose architecture ships in assets/ (config files only).
ARCHITECTURES = {"stabilityai/stable-diffusion-2-1-base": "sd21-base"}
TEXT_LENGTH = 77


def architecture_folder(model: str) -> Path:
    """A diffusers folder holding (at least) unet/config.json: ``model`` itself when it is a folder,
    else the shipped architecture of that hub id."""
    path = Path(model).expanduser()
    if not path.is_dir() and model in ARCHITECTURES:
        path = ASSETS_DIR / ARCHITECTURES[model]
    if not (path / "unet" / "config.json").is_file():
        raise ModelLoadError(
            f"no architecture config for '{model}' (looked for unet/config.json)",
            hint=f"--random-weights knows {', '.join(ARCHITECTURES)}, or any local diffusers folder with unet/config.json",
        )
    return path


class RandomEmbeddings:
    """Mixed into a guide: prompts as fixed random embeddings (seeded by the prompt), no tokenizer."""

    embedding_dim: int

    def embed(self, prompts: List[str]) -> torch.Tensor:
        rows = []
        for prompt in prompts:
            seed = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "little")
            rows.append(torch.randn(TEXT_LENGTH, self.embedding_dim, generator=torch.Generator().manual_seed(seed)))
        return torch.stack(rows).to(self.device)

    def known_words_only(self, prompt: str) -> str:
        return prompt


class RandomLatentGuide(RandomEmbeddings, StableDiffusionGuide):
    pass


class RandomPixelGuide(RandomEmbeddings, PixelGuide):
    pass


def random_weights_guide(cfg, device: torch.device):
    """The guide ``cfg`` (the ``guide`` section) names, with its UNet (and VAE) built from config with
    random weights, in the configured dtype and memory format."""
    from diffusers import AutoencoderKL, AutoencoderTiny, DDIMScheduler, UNet2DConditionModel

    folder = architecture_folder(cfg.model)
    dtype = resolve_dtype(cfg.dtype, device)
    with torch.device(device):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder, subfolder="unet")).to(dtype)
        vae = None
        if (folder / "vae" / "config.json").is_file():  # AutoencoderTiny's defaults are TAESD's architecture
            vae = AutoencoderTiny() if cfg.tiny_vae else AutoencoderKL.from_config(AutoencoderKL.load_config(folder, subfolder="vae"))
            vae = vae.to(dtype)
    prepare_unet(unet, device, cfg.channels_last, cfg.compile)
    scheduler = DDIMScheduler.from_config(json.loads((folder / "scheduler" / "scheduler_config.json").read_text()))
    args = (str(folder), unet, scheduler, None, device, dtype)
    guide = RandomPixelGuide(*args) if vae is None else RandomLatentGuide(args[0], unet, vae, *args[2:])
    guide.embedding_dim = unet.config.encoder_hid_dim or unet.config.cross_attention_dim
    millions = sum(p.numel() for p in unet.parameters()) / 1e6
    log.info("guide: random weights from %s (UNet %.0fM parameters) on %s, %s, %d px, prompts as random [%d, %d] embeddings",
             folder, millions, device, dtype, guide.resolution, TEXT_LENGTH, guide.embedding_dim)
    return guide
