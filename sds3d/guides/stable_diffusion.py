"""Stable Diffusion (1.x / 2.x layouts, epsilon or v prediction) as a latent-space Guide."""

import logging

import torch
import torch.nn.functional as F

from sds3d.guides.base import DiffusersGuide, load_component, load_unet_and_scheduler, model_key
from sds3d.guides.prompts import EmbeddingCache

log = logging.getLogger("sds3d")


class StableDiffusionGuide(DiffusersGuide):
    """Renders are encoded by the VAE (gradients flow through its encoder) at the model's own resolution."""

    latent = True

    def __init__(self, model: str, unet, vae, scheduler, cache: EmbeddingCache, device: torch.device, dtype: torch.dtype):
        super().__init__(model, unet, scheduler, cache, device, dtype)
        self.vae = vae.requires_grad_(False).eval()
        self.resolution = unet.config.sample_size * 2 ** (len(vae.config.block_out_channels) - 1)

    @classmethod
    def from_pretrained(cls, model: str, device: torch.device, dtype: str = "auto", channels_last: bool = True,
                        cache_dir: str = "~/.cache/sds3d") -> "StableDiffusionGuide":
        from diffusers import AutoencoderKL

        model, unet, scheduler, torch_dtype = load_unet_and_scheduler(model, device, dtype, channels_last)
        vae = load_component(AutoencoderKL, model, "vae", torch_dtype=torch_dtype).to(device)
        guide = cls(model, unet, vae, scheduler, EmbeddingCache(cache_dir, model_key(model)), device, torch_dtype)
        log.info("guide: %s on %s, %s, %d px latent model, %s", model, device, torch_dtype, guide.resolution, guide.prediction_type)
        return guide

    def encode(self, rgb: torch.Tensor) -> torch.Tensor:
        """rgb [B, 3, H, W] in [0, 1] -> scaled VAE latents [B, 4, h, w], differentiable w.r.t. rgb."""
        rgb = F.interpolate(rgb, (self.resolution, self.resolution), mode="bilinear", align_corners=False)
        posterior = self.vae.encode((rgb * 2.0 - 1.0).to(self.dtype)).latent_dist
        return (posterior.sample() * self.vae.config.scaling_factor).float()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> rgb [B, 3, H, W] in [0, 1] (for previews; no gradient)."""
        with torch.no_grad():
            image = self.vae.decode((latents / self.vae.config.scaling_factor).to(self.dtype)).sample
        return (image.float() * 0.5 + 0.5).clamp(0.0, 1.0)
