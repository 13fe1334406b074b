"""Picks the guide for ``guide.model``: a latent model (a folder with vae/), a pixel-space one, or the
exact world denoiser (``exact:world``)."""

import json
from pathlib import Path

import torch

from sds3d.errors import ConfigError, ModelLoadError
from sds3d.guides.base import TextEmbedder, locate_model
from sds3d.guides.exact import ExactDenoiserGuide
from sds3d.guides.pixel import PixelGuide
from sds3d.guides.stable_diffusion import StableDiffusionGuide


def has_vae(model: str) -> bool:
    """Whether a diffusers model (local folder or hub id) is a latent model."""
    if Path(model).is_dir():
        return (Path(model) / "vae").is_dir()
    from huggingface_hub import hf_hub_download

    try:
        index = json.loads(Path(hf_hub_download(model, "model_index.json")).read_text())
    except Exception as exc:  # the hub client raises many types: offline, not found, gated, network
        raise ModelLoadError(
            f"cannot read model_index.json of hub id '{model}': {str(exc).splitlines()[0]}",
            hint="without network, point guide.model at a downloaded diffusers folder",
        ) from exc
    return "vae" in index


def load_guide(cfg, device: torch.device):
    """``cfg`` is the ``guide`` config section."""
    if cfg.model.startswith("exact:"):
        return ExactDenoiserGuide.from_spec(cfg.model, device)
    model = locate_model(cfg.model)
    if has_vae(model):
        adapter = dict(source=cfg.ip_adapter, subfolder=cfg.ip_adapter_subfolder, weight_name=cfg.ip_adapter_weight,
                       scale=cfg.ip_adapter_scale) if cfg.ip_adapter else None
        return StableDiffusionGuide.from_pretrained(model, device, cfg.dtype, cfg.channels_last, cfg.cache_dir, cfg.compile,
                                                    cfg.tiny_vae, adapter)
    if cfg.ip_adapter:
        raise ConfigError(f"guide.ip_adapter is set, but '{cfg.model}' is a pixel-space model (DeepFloyd IF): an IP-Adapter "
                          "conditions a Stable Diffusion (latent) UNet", hint="guide.model=<SD 1.5 hub id or folder>")
    if cfg.tiny_vae:
        raise ConfigError(f"guide.tiny_vae is set, but '{cfg.model}' is a pixel-space model without a VAE", hint='set guide.tiny_vae=""')
    return PixelGuide.from_pretrained(model, device, cfg.dtype, cfg.channels_last, cfg.cache_dir, cfg.compile)


def load_text_embedder(cfg, device: torch.device):
    """What embeds prompts for the guide of ``cfg`` (the ``guide`` section), without loading its UNet: its text
    encoder and embedding cache (the exact world guide is its own, and costs nothing to build)."""
    if cfg.model.startswith("exact:"):
        return ExactDenoiserGuide.from_spec(cfg.model, device)
    return TextEmbedder.of(cfg.model, device, cfg.dtype, cfg.cache_dir)
