"""Stable Diffusion (1.x / 2.x layouts, epsilon or v prediction) as a latent-space Guide."""

import logging
from typing import Optional

import torch
import torch.nn.functional as F

from sds3d.guides.base import DiffusersGuide, load_component, load_unet_and_scheduler, locate_model, model_key
from sds3d.guides.ip_adapter import ImageAdapter
from sds3d.guides.prompts import EmbeddingCache

log = logging.getLogger("sds3d")


class StableDiffusionGuide(DiffusersGuide):
    """Renders are encoded by the VAE (gradients flow through its encoder) at the model's own resolution."""

    latent = True

    def __init__(self, model: str, unet, vae, scheduler, cache: EmbeddingCache, device: torch.device, dtype: torch.dtype):
        super().__init__(model, unet, scheduler, cache, device, dtype)
        self.vae = vae.requires_grad_(False).eval()
        channels = vae.config.get("block_out_channels") or vae.config.encoder_block_out_channels  # AutoencoderKL or Tiny
        self.resolution = unet.config.sample_size * 2 ** (len(channels) - 1)
        self.latent_resolution = unet.config.sample_size

    @classmethod
    def from_pretrained(cls, model: str, device: torch.device, dtype: str = "auto", channels_last: bool = True,
                        cache_dir: str = "~/.cache/sds3d", compile: bool = False, tiny_vae: str = "",
                        ip_adapter: Optional[dict] = None) -> "StableDiffusionGuide":
        """``tiny_vae``: a diffusers AutoencoderTiny (hub id or folder, e.g. madebyollin/taesd) used instead of the VAE.
        ``ip_adapter``: ``ImageAdapter.load``'s source, subfolder, weight_name and scale, for image prompts."""
        from diffusers import AutoencoderKL, AutoencoderTiny

        model, unet, scheduler, torch_dtype = load_unet_and_scheduler(model, device, dtype, channels_last, compile)
        if tiny_vae:
            vae = load_component(AutoencoderTiny, locate_model(tiny_vae), "", torch_dtype=torch_dtype).to(device)
            log.info("guide VAE: tiny VAE %s instead of the model's own", tiny_vae)
        else:
            vae = load_component(AutoencoderKL, model, "vae", torch_dtype=torch_dtype).to(device)
        guide = cls(model, unet, vae, scheduler, EmbeddingCache(cache_dir, model_key(model)), device, torch_dtype)
        if ip_adapter:
            guide.image_adapter = ImageAdapter.load(unet, scheduler, **ip_adapter, device=device, dtype=torch_dtype)
            log.info("guide image prompt: IP-Adapter %s/%s from %s at scale %g", ip_adapter["subfolder"],
                     ip_adapter["weight_name"], ip_adapter["source"], ip_adapter["scale"])
        log.info("guide: %s on %s, %s, %d px latent model, %s", model, device, torch_dtype, guide.resolution, guide.prediction_type)
        return guide

    def encode(self, rgb: torch.Tensor) -> torch.Tensor:
        """rgb [B, 3, H, W] in [0, 1] -> scaled VAE latents [B, 4, h, w], differentiable w.r.t. rgb."""
        rgb = F.interpolate(rgb, (self.resolution, self.resolution), mode="bilinear", align_corners=False)
        encoded = self.vae.encode((rgb * 2.0 - 1.0).to(self.dtype))
        latents = encoded.latent_dist.sample() if "latent_dist" in encoded else encoded.latents  # KL or tiny VAE
        return (latents * self.vae.config.scaling_factor).float()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> rgb [B, 3, H, W] in [0, 1] (for previews; no gradient)."""
        with torch.no_grad():
            image = self.vae.decode((latents / self.vae.config.scaling_factor).to(self.dtype)).sample
        return (image.float() * 0.5 + 0.5).clamp(0.0, 1.0)
