"""Pixel-space models as Guides: the bundled prior and DeepFloyd IF stage I (T5 text encoder,
learned-variance UNet). Renders are resized to the UNet's sample size and mapped to [-1, 1]."""

import logging

import torch
import torch.nn.functional as F

from sds3d.guides.base import DiffusersGuide, load_unet_and_scheduler, model_key
from sds3d.guides.prompts import EmbeddingCache

log = logging.getLogger("sds3d")


class PixelGuide(DiffusersGuide):
    latent = False

    def __init__(self, model: str, unet, scheduler, cache: EmbeddingCache, device: torch.device, dtype: torch.dtype):
        super().__init__(model, unet, scheduler, cache, device, dtype)
        self.resolution = unet.config.sample_size

    @classmethod
    def from_pretrained(cls, model: str, device: torch.device, dtype: str = "auto", channels_last: bool = True,
                        cache_dir: str = "~/.cache/sds3d", compile: bool = False) -> "PixelGuide":
        model, unet, scheduler, torch_dtype = load_unet_and_scheduler(model, device, dtype, channels_last, compile)
        guide = cls(model, unet, scheduler, EmbeddingCache(cache_dir, model_key(model)), device, torch_dtype)
        log.info("guide: %s on %s, %s, %d px pixel model, %s", model, device, torch_dtype, guide.resolution, guide.prediction_type)
        return guide

    def encode(self, rgb: torch.Tensor) -> torch.Tensor:
        return pixel_encode(rgb, self.resolution)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return pixel_decode(x)


def pixel_encode(rgb: torch.Tensor, resolution: int) -> torch.Tensor:
    """rgb [B, 3, H, W] in [0, 1] -> [B, 3, r, r] in [-1, 1] at resolution r (differentiable)."""
    rgb = F.interpolate(rgb, (resolution, resolution), mode="bilinear", align_corners=False, antialias=True)
    return rgb * 2.0 - 1.0


def pixel_decode(x: torch.Tensor) -> torch.Tensor:
    """x in [-1, 1] (unconstrained when optimised directly) -> rgb in [0, 1], clamped."""
    return ((x.detach() + 1.0) * 0.5).clamp(0.0, 1.0)
