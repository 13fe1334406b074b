"""Stable Diffusion (1.x / 2.x layouts, epsilon or v prediction) as a latent-space Guide."""

import gc
import logging
import os
from pathlib import Path
from typing import List

import torch
import torch.nn.functional as F

from sds3d.errors import ModelLoadError
from sds3d.guides.prompts import EmbeddingCache

log = logging.getLogger("sds3d")


def locate_model(model: str) -> str:
    """A local folder's absolute path, or the hub id unchanged; a path that does not exist is an error."""
    path = Path(model).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise ModelLoadError(
            f"model folder '{model}' does not exist",
            hint="guide.model takes a local diffusers folder or a hub id such as stabilityai/stable-diffusion-2-1-base",
        )
    return model


def load_component(cls, model: str, subfolder: str, **kwargs):
    """``cls.from_pretrained(model, subfolder=...)`` with a ModelLoadError that says what was tried."""
    try:
        return cls.from_pretrained(model, subfolder=subfolder, **kwargs)
    except (OSError, ValueError, EnvironmentError) as exc:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        tried = f"local folder '{model}'" if Path(model).is_dir() else f"hub id '{model}'" + (" (HF_HUB_OFFLINE is set)" if offline else "")
        raise ModelLoadError(
            f"cannot load {subfolder} ({cls.__name__}) from {tried}: {str(exc).splitlines()[0]}",
            hint="without network, point guide.model at a downloaded diffusers folder (unet/, vae/, text_encoder/, tokenizer/, scheduler/)",
        ) from exc


def quiet_loading() -> None:
    """diffusers and transformers draw a progress bar per component load; one run needs none of them."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return {"fp16": torch.float16, "fp32": torch.float32}[name]


class StableDiffusionGuide:
    """Frozen UNet + VAE; the text encoder is loaded only for prompts missing from the cache, then freed."""

    def __init__(self, model: str, unet, vae, scheduler, cache: EmbeddingCache, device: torch.device, dtype: torch.dtype):
        self.model, self.unet, self.vae = model, unet, vae
        self.device, self.dtype, self.cache = device, dtype, cache
        self.prediction_type = scheduler.config.prediction_type
        self.alphas_cumprod = scheduler.alphas_cumprod.to(device=device, dtype=torch.float32)
        self.vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)
        self.resolution = unet.config.sample_size * self.vae_scale
        for module in (unet, vae):
            module.requires_grad_(False).eval()

    @classmethod
    def from_pretrained(cls, model: str, device: torch.device, dtype: str = "auto", channels_last: bool = True,
                        cache_dir: str = "~/.cache/sds3d") -> "StableDiffusionGuide":
        from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

        model = locate_model(model)
        quiet_loading()
        torch_dtype = resolve_dtype(dtype, device)
        unet = load_component(UNet2DConditionModel, model, "unet", torch_dtype=torch_dtype).to(device)
        vae = load_component(AutoencoderKL, model, "vae", torch_dtype=torch_dtype).to(device)
        scheduler = load_component(DDIMScheduler, model, "scheduler")
        if channels_last and device.type == "cuda":
            unet.to(memory_format=torch.channels_last)
        guide = cls(model, unet, vae, scheduler, EmbeddingCache(cache_dir, model), device, torch_dtype)
        log.info("guide: %s on %s, %s, %d px, %s", model, device, torch_dtype, guide.resolution, guide.prediction_type)
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

    def embed(self, prompts: List[str]) -> torch.Tensor:
        embeddings = {p: self.cache.get(p) for p in prompts}
        missing = [p for p, e in embeddings.items() if e is None]
        if missing:
            embeddings.update(zip(missing, self._encode_text(missing)))
            for prompt in missing:
                self.cache.put(prompt, embeddings[prompt])
        return torch.stack([embeddings[p] for p in prompts]).to(self.device)

    def _encode_text(self, prompts: List[str]) -> torch.Tensor:
        from transformers import CLIPTextModel, CLIPTokenizer

        tokenizer = load_component(CLIPTokenizer, self.model, "tokenizer")
        encoder = load_component(CLIPTextModel, self.model, "text_encoder", torch_dtype=self.dtype).to(self.device)
        tokens = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt")
        with torch.no_grad():
            hidden = encoder(tokens.input_ids.to(self.device))[0].float().cpu()
        del encoder
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return hidden

    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        conditions, batch = embeddings.shape[:2]
        with torch.no_grad():
            out = self.unet(
                x_t.repeat(conditions, 1, 1, 1).to(self.dtype),
                t.repeat(conditions),
                encoder_hidden_states=embeddings.flatten(0, 1).to(self.dtype),
            ).sample.float()
        out = out.reshape(conditions, batch, *out.shape[1:])  # [C, B, 4, h, w]
        if self.prediction_type == "v_prediction":
            alpha = self.alphas_cumprod[t].sqrt().view(1, batch, 1, 1, 1)
            sigma = (1.0 - self.alphas_cumprod[t]).sqrt().view(1, batch, 1, 1, 1)
            out = alpha * out + sigma * x_t.float()[None]
        return out
