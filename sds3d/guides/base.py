"""The Guide protocol (a frozen diffusion model seen as a noise-prediction service) and the parts
every diffusers-backed guide shares: loading with clear errors, the cached text embeddings, and one
batched UNet call with v-prediction and learned-variance outputs converted to epsilon."""

import functools
import gc
import logging
import re
import os
from pathlib import Path
from typing import List, Optional, Protocol

import torch

from sds3d.cameras import CAMERA_FEATURES, Cameras, camera_features
from sds3d.errors import ConfigError, ModelLoadError
from sds3d.guides.prompts import EmbeddingCache

log = logging.getLogger("sds3d")


class Guide(Protocol):
    """What objectives may ask of a diffusion model.

    ``alphas_cumprod`` [T] float32 on the guide's device; ``resolution`` is the square image size the
    model works at (from the model's own config); ``latent`` says whether x is a latent (VAE) space
    rather than pixels. Every prediction runs under no_grad.
    """

    alphas_cumprod: torch.Tensor
    resolution: int
    device: torch.device
    latent: bool

    def encode(self, rgb: torch.Tensor) -> torch.Tensor:
        """rgb [B, 3, H, W] in [0, 1] -> x, the model's input space (differentiable)."""

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """x -> rgb [B, 3, resolution, resolution] in [0, 1], for previews (no gradient)."""

    def embed(self, prompts: List[str]) -> torch.Tensor:
        """Text embeddings [P, L, D] (float32, on the guide's device), cached on disk."""

    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """x_t [B, ...], t [B] (long), embeddings [C, B, L, D] -> eps [C, B, ...] in one model call.
        A guide with ``view_aware`` true also takes ``cameras``, the views' Cameras (or None); one with an
        ``image_adapter`` also takes ``images`` [C, B, D], the image embedding each row sees (zeros: none)."""


def padding_mask(config, tokens) -> Optional[torch.Tensor]:
    """The attention mask a text encoder of ``config`` reads ``tokens`` with: T5 (DeepFloyd IF, a T5 prior) is
    trained with the padding mask; CLIP encoders are used without one, as in diffusers."""
    return tokens.attention_mask if config.model_type == "t5" else None


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
    """``cls.from_pretrained(model, subfolder=...)`` ("" for the model's root) with a ModelLoadError that says what was tried."""
    try:
        return cls.from_pretrained(model, subfolder=subfolder or None, **kwargs)
    except (OSError, ValueError) as exc:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        tried = f"local folder '{model}'" if Path(model).is_dir() else f"hub id '{model}'" + (" (HF_HUB_OFFLINE is set)" if offline else "")
        raise ModelLoadError(
            f"cannot load {subfolder or 'the model'} ({cls.__name__}) from {tried}: {str(exc).splitlines()[0]}",
            hint="without network, point guide.model at a downloaded diffusers folder (unet/, text_encoder/, tokenizer/, scheduler/)",
        ) from exc


def model_key(model: str) -> str:
    """What the embedding cache is keyed by: a hub id as is; a local folder with the size and time of
    its text-encoder files, so retraining a model in place (the bundled prior) invalidates its cache."""
    folder = Path(model) / "text_encoder"
    if not folder.is_dir():
        return model
    stamps = sorted(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in folder.iterdir())
    return f"{model}|{'|'.join(stamps)}"


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return {"fp16": torch.float16, "fp32": torch.float32}[name]


def quiet_loading() -> None:
    """diffusers and transformers draw a progress bar per component load; one run needs none of them."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def load_unet_and_scheduler(model: str, device: torch.device, dtype: str, channels_last: bool, compile: bool = False):
    """The parts every diffusers guide loads: (resolved model, frozen-to-be UNet, DDIM scheduler, torch dtype)."""
    from diffusers import DDIMScheduler, UNet2DConditionModel

    model = locate_model(model)
    quiet_loading()
    torch_dtype = resolve_dtype(dtype, device)
    unet = load_component(UNet2DConditionModel, model, "unet", torch_dtype=torch_dtype).to(device)
    scheduler = load_component(DDIMScheduler, model, "scheduler")
    prepare_unet(unet, device, channels_last, compile)
    return model, unet, scheduler, torch_dtype


def prepare_unet(unet, device: torch.device, channels_last: bool, compile: bool) -> None:
    """channels_last memory format on cuda and an optional in-place ``torch.compile``; logs what runs."""
    if channels_last and device.type == "cuda":
        unet.to(memory_format=torch.channels_last)
    if compile:
        unet.compile()
    attention = ", ".join(sorted({type(p).__name__ for p in unet.attn_processors.values()})) or "none"
    layout = "channels_last" if channels_last and device.type == "cuda" else "contiguous"
    log.info("guide UNet: %s, attention %s (AttnProcessor2_0 is torch SDPA), %s", layout, attention,
             "torch.compile (the first steps compile)" if compile else "eager (guide.compile=true compiles it)")


class TextEmbedder:
    """A diffusers model's text embeddings: from the embedding cache, or from its text encoder, loaded only for
    prompts missing there (then freed). Alone (``TextEmbedder.of``), it embeds prompts without loading the UNet."""

    def __init__(self, model: str, cache: EmbeddingCache, device: torch.device, dtype: torch.dtype):
        self.model, self.cache, self.device, self.dtype = model, cache, device, dtype

    @classmethod
    def of(cls, model: str, device: torch.device, dtype: str = "auto", cache_dir: str = "~/.cache/sds3d") -> "TextEmbedder":
        model = locate_model(model)
        return cls(model, EmbeddingCache(cache_dir, model_key(model)), device, resolve_dtype(dtype, device))

    def embed(self, prompts: List[str]) -> torch.Tensor:
        embeddings = {p: self.cache.get(p) for p in prompts}
        missing = [p for p, e in embeddings.items() if e is None]
        if missing:
            embeddings.update(zip(missing, self._encode_text(missing)))
            for prompt in missing:
                self.cache.put(prompt, embeddings[prompt])
        return torch.stack([embeddings[p] for p in prompts]).to(self.device)

    def known_words_only(self, prompt: str) -> str:
        """``prompt`` without the words the model's tokenizer does not know (used for negative prompts:
        a word the model never saw has no meaning to push away from)."""
        import transformers

        unknown = set(unknown_words(load_component(transformers.AutoTokenizer, self.model, "tokenizer"), [prompt]))
        if not unknown:
            return prompt
        log.warning("the model does not know %s: left out of the negative prompt", ", ".join(sorted(unknown)))
        text = " ".join(w for w in prompt.replace(",", " , ").split() if w not in unknown)
        return re.sub(r"\s*(,\s*)+", ", ", text).strip(" ,")

    def _encode_text(self, prompts: List[str]) -> torch.Tensor:
        import transformers

        tokenizer = load_component(transformers.AutoTokenizer, self.model, "tokenizer")
        check_vocabulary(tokenizer, prompts, self.model)
        config = load_component(transformers.AutoConfig, self.model, "text_encoder")
        encoder_cls = getattr(transformers, (config.architectures or ["CLIPTextModel"])[0])
        encoder = load_component(encoder_cls, self.model, "text_encoder", torch_dtype=self.dtype).to(self.device)
        length = min(tokenizer.model_max_length, 77)
        for prompt, ids in zip(prompts, tokenizer(prompts).input_ids):
            if len(ids) > length:
                log.warning("the prompt '%s' is %d tokens, more than the text encoder's %d: the rest is cut off",
                            prompt, len(ids), length)
        tokens = tokenizer(prompts, padding="max_length", max_length=length, truncation=True, return_tensors="pt").to(self.device)
        with torch.no_grad():
            hidden = encoder(tokens.input_ids, attention_mask=padding_mask(config, tokens))[0].float().cpu()
        del encoder
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return hidden

class DiffusersGuide(TextEmbedder):
    """A frozen diffusers UNet with its scheduler's alphas, and the model's text embeddings (``TextEmbedder``).
    Subclasses set ``resolution`` and ``encode``."""

    resolution: int

    def __init__(self, model: str, unet, scheduler, cache: EmbeddingCache, device: torch.device, dtype: torch.dtype):
        super().__init__(model, cache, device, dtype)
        self.unet = unet
        # A UNet with a camera embedding (the bundled prior) is told each view's camera_features.
        self.view_aware = (unet.config.get("class_embed_type") == "projection"
                           and unet.config.get("projection_class_embeddings_input_dim") == CAMERA_FEATURES)
        self.prediction_type = scheduler.config.prediction_type
        self.alphas_cumprod = scheduler.alphas_cumprod.to(device=device, dtype=torch.float32)
        self.image_adapter = None  # an ImageAdapter (sds3d.guides.ip_adapter) once one is loaded into the UNet
        unet.requires_grad_(False).eval()

    def unet_output(self, x_t: torch.Tensor, t: torch.Tensor, embeddings: torch.Tensor,
                    images: Optional[torch.Tensor] = None, **unet_kwargs) -> torch.Tensor:
        """The UNet's own prediction (eps or v; a learned-variance half dropped) for x_t [B, ...] under
        embeddings [B, L, D] and, with an image adapter, image embeddings ``images`` [B, D] (zero rows, or None, see
        no image). Gradients reach trainable adapters (VSD's LoRA) when grad is enabled.
        A camera-conditioned UNet given no ``class_labels`` is told the camera is unknown."""
        if self.view_aware and "class_labels" not in unet_kwargs:
            unet_kwargs["class_labels"] = self.camera_labels(None, x_t.shape[0])
        if self.image_adapter is not None:
            unet_kwargs["added_cond_kwargs"] = self.image_adapter.unet_inputs(images, x_t.shape[0])
        out = self.unet(x_t.to(self.dtype), t, encoder_hidden_states=embeddings.to(self.dtype), **unet_kwargs).sample.float()
        return out[:, : x_t.shape[1]]  # models with learned variance (IF) output [eps, variance]

    def to_eps(self, out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """A prediction ``out`` [..., B, ...] in the model's parametrisation as eps; v: eps = alpha v + sigma x_t."""
        if self.prediction_type != "v_prediction":
            return out
        shape = (-1,) + (1,) * (x_t.dim() - 1)
        alpha = self.alphas_cumprod[t].sqrt().view(shape)
        sigma = (1.0 - self.alphas_cumprod[t]).sqrt().view(shape)
        return alpha * out + sigma * x_t.float()

    def camera_labels(self, cameras: Optional[Cameras], batch: int) -> torch.Tensor:
        """The UNet's class labels for the views: their ``camera_features``, or "unknown" rows without cameras."""
        return camera_features(cameras, batch).to(self.device, self.dtype)

    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, embeddings: torch.Tensor,
                      cameras: Optional[Cameras] = None, images: Optional[torch.Tensor] = None) -> torch.Tensor:
        """As the protocol's; ``images`` [C, B, D] are the image embeddings each row sees (image adapter only)."""
        conditions, batch = embeddings.shape[:2]
        views = {"class_labels": self.camera_labels(cameras, batch).repeat(conditions, 1)} if self.view_aware else {}
        with torch.no_grad():
            out = self.unet_output(x_t.repeat(conditions, *([1] * (x_t.dim() - 1))), t.repeat(conditions),
                                   embeddings.flatten(0, 1), images=None if images is None else images.flatten(0, 1), **views)
        return self.to_eps(out.reshape(conditions, batch, *out.shape[1:]), x_t, t)  # [C, B, ...]


def unknown_words(tokenizer, prompts: List[str]) -> List[str]:
    """Words a word-level tokenizer (the bundled prior's) maps to [UNK]; none for subword tokenizers."""
    unk = tokenizer.unk_token_id
    if unk is None:
        return []
    return sorted({w for p in prompts for w in p.replace(",", " , ").split()
                   if unk in tokenizer(w, add_special_tokens=False).input_ids})


def check_prompt_words(model: str, prompt: str) -> None:
    """Before any model loads: for a local model folder whose tokenizer is word-level (the bundled prior),
    a ConfigError naming the prompt's words it does not know. Hub ids and subword tokenizers pass."""
    folder = Path(model).expanduser()
    if (folder / "tokenizer").is_dir():
        check_vocabulary(_folder_tokenizer(str(folder.resolve())), [prompt], model)


@functools.lru_cache(maxsize=8)
def _folder_tokenizer(folder: str):
    import transformers

    return load_component(transformers.AutoTokenizer, folder, "tokenizer")


def check_vocabulary(tokenizer, prompts: List[str], model: str) -> None:
    """Unknown words would become [UNK]: name them instead."""
    unknown = unknown_words(tokenizer, prompts)
    if unknown:
        known = sorted(w for w in tokenizer.get_vocab() if not w.startswith(("[", "<")))
        raise ConfigError(
            f"the model '{model}' does not know the word(s): {', '.join(unknown)}; it knows: {' '.join(known)}",
            hint="use those words, or a full text-to-image model: --config dreamfusion-sd (or guide.model=<diffusers folder or hub id>)",
        )
