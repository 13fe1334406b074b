"""Tiny, randomly initialised Stable Diffusion checkpoints for tests.

Everything is built from configs (nothing is downloaded) and written in
diffusers' folder layout, so ``StableDiffusionPipeline.from_pretrained(path)``
and the per-component ``X.from_pretrained(path, subfolder=...)`` both accept it.

Sizes: UNet latent 4x8x8, VAE scale factor 2 -> working resolution 16x16,
CLIP text encoder hidden size 16 (= UNet cross_attention_dim), character-level
BPE tokenizer with ``model_max_length`` 77.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
MODEL_MAX_LENGTH = 77
TEXT_HIDDEN_SIZE = 16  # == unet cross_attention_dim

# Characters the tokenizer knows, each as a word-internal piece "c" and a
# word-final piece "c</w>".
_TOKEN_CHARS = list(string.ascii_lowercase) + list(string.digits) + list(",.'-")


def _write_char_bpe_files(folder: Path) -> tuple[Path, Path]:
    """Write a character-level CLIP BPE vocab.json + merges.txt (no merges)."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = {}
    for c in _TOKEN_CHARS:
        vocab[c] = len(vocab)
    for c in _TOKEN_CHARS:
        vocab[c + "</w>"] = len(vocab)
    vocab[BOS_TOKEN] = len(vocab)
    vocab[EOS_TOKEN] = len(vocab)
    vocab_file = folder / "vocab.json"
    merges_file = folder / "merges.txt"
    vocab_file.write_text(json.dumps(vocab, ensure_ascii=False, indent=0), encoding="utf-8")
    merges_file.write_text("#version: 0.2\n", encoding="utf-8")
    return vocab_file, merges_file


def _build_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    vocab_file, merges_file = _write_char_bpe_files(folder)
    # transformers 4.x: slow (python) CLIPTokenizer(vocab_file, merges_file).
    # transformers 5.x: CLIPTokenizer is tokenizers-backed; its first two
    # arguments are `vocab` / `merges`, which also accept file paths.
    tokenizer = CLIPTokenizer(
        str(vocab_file),
        str(merges_file),
        unk_token=EOS_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        model_max_length=MODEL_MAX_LENGTH,
    )
    return tokenizer


def save_tiny_stable_diffusion(
    path: Path, *, prediction_type: str = "epsilon", seed: int = 0
) -> Path:
    """Build a tiny seeded Stable Diffusion and save it under ``path``.

    Layout: unet/, vae/, text_encoder/, tokenizer/, scheduler/, model_index.json.
    Returns ``path``.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)

    # --- tokenizer (written first: the text encoder's vocab/special ids follow it)
    tokenizer_dir = path / "tokenizer"
    tokenizer = _build_tokenizer(tokenizer_dir)
    # Keep vocab.json/merges.txt next to tokenizer.json so the folder also loads
    # with transformers 4.x' slow CLIPTokenizer.
    tokenizer.save_pretrained(tokenizer_dir)

    # Seed once, then build every module in a fixed order -> deterministic weights.
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        unet = UNet2DConditionModel(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            layers_per_block=1,
            block_out_channels=(8, 16),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=TEXT_HIDDEN_SIZE,
            attention_head_dim=4,
            norm_num_groups=4,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            block_out_channels=(8, 16),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=4,
            sample_size=16,
            scaling_factor=0.18215,
        )
        text_config = CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=TEXT_HIDDEN_SIZE,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=MODEL_MAX_LENGTH,
            projection_dim=TEXT_HIDDEN_SIZE,
            hidden_act="quick_gelu",
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        text_encoder = CLIPTextModel(text_config)
    finally:
        torch.random.set_rng_state(gen_state)

    scheduler = DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        prediction_type=prediction_type,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )

    unet.save_pretrained(path / "unet")
    vae.save_pretrained(path / "vae")
    text_encoder.save_pretrained(path / "text_encoder")
    scheduler.save_pretrained(path / "scheduler")

    # model_index.json as StableDiffusionPipeline.save_pretrained writes it (written by hand: building the
    # pipeline object is not needed and would drag in safety-checker machinery).
    write_model_index(path, "StableDiffusionPipeline",
                      {"scheduler": scheduler, "text_encoder": text_encoder, "tokenizer": tokenizer, "unet": unet, "vae": vae},
                      feature_extractor=[None, None], image_encoder=[None, None])
    return path


# --- IP-Adapter (image prompts) for the tiny Stable Diffusion ------------------------------------------

IP_ADAPTER_WEIGHT = "ip-adapter_tiny.safetensors"
IMAGE_EMBED_DIM = 12  # the tiny CLIP vision encoder's projection_dim


def save_tiny_ip_adapter(path: Path, unet_dir: Path, seed: int = 0) -> Path:
    """An IP-Adapter for the tiny SD whose UNet is in ``unet_dir``, laid out as h94/IP-Adapter is:
    models/<IP_ADAPTER_WEIGHT> (the original checkpoint format, "image_proj.*" and "ip_adapter.<n>.to_k_ip/to_v_ip"
    for every cross-attention layer in the UNet's processor order, n = 1, 3, 5, ...) and models/image_encoder (a
    tiny CLIPVisionModelWithProjection on 32 px images). The weights are random but large enough that the image
    visibly changes the UNet's prediction. Returns ``path``."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    unet = UNet2DConditionModel.from_pretrained(unet_dir)
    models = Path(path) / "models"
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
            image_size=32, patch_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
            num_attention_heads=2, projection_dim=IMAGE_EMBED_DIM))
        dim, tokens = unet.config.cross_attention_dim, 4
        weights = {"image_proj.proj.weight": torch.randn(dim * tokens, IMAGE_EMBED_DIM), "image_proj.proj.bias": torch.zeros(dim * tokens),
                   "image_proj.norm.weight": torch.ones(dim), "image_proj.norm.bias": torch.zeros(dim)}
        cross = [name for name in unet.attn_processors if name.endswith("attn2.processor")]
        for n, name in zip(range(1, 2 * len(cross), 2), cross):
            hidden = unet.get_submodule(name.removesuffix(".processor")).to_k.out_features
            weights[f"ip_adapter.{n}.to_k_ip.weight"] = torch.randn(hidden, dim)
            weights[f"ip_adapter.{n}.to_v_ip.weight"] = torch.randn(hidden, dim)
    finally:
        torch.random.set_rng_state(gen_state)
    encoder.save_pretrained(models / "image_encoder")
    save_file(weights, str(models / IP_ADAPTER_WEIGHT))
    return Path(path)


# --- DeepFloyd IF stage I (pixel space, T5 text encoder, learned variance) ---------------------------

IF_WORDS = ("a", "an", "red", "blue", "green", "cube", "sphere", "cat", "hamburger", "on", "top", "of",
            "to", "the", "left", "front", "side", "back", "view", ",")
IF_TEXT_WIDTH = 16  # T5 d_model (== unet encoder_hid_dim)
IF_CROSS_ATTENTION_DIM = 32


def _build_t5_tokenizer():
    """A word-level tokenizer in T5's style: ``</s>`` appended, ``<pad>`` id 0, ``<unk>`` for the rest."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "</s>", "<unk>", *IF_WORDS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", vocab["</s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=MODEL_MAX_LENGTH)


def save_tiny_deepfloyd_if(path: Path, seed: int = 0) -> Path:
    """Build a tiny seeded DeepFloyd-IF-stage-I-shaped model and save it under ``path``.

    Layout: text_encoder/ (T5EncoderModel), tokenizer/, unet/ (pixel space, 16x16, 3 -> 6 channels:
    epsilon and learned variance, T5 features projected by ``encoder_hid_dim``), scheduler/ (DDPM,
    cosine, learned_range), model_index.json; no vae/. Returns ``path``.
    """
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import T5Config, T5EncoderModel

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = _build_t5_tokenizer()
    tokenizer.save_pretrained(path / "tokenizer")

    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        text_encoder = T5EncoderModel(T5Config(
            vocab_size=len(tokenizer), d_model=IF_TEXT_WIDTH, d_ff=32, d_kv=8, num_layers=2, num_heads=2,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=0,
        ))
        unet = UNet2DConditionModel(
            sample_size=16,
            in_channels=3,
            out_channels=6,
            layers_per_block=1,
            block_out_channels=(8, 16),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            encoder_hid_dim=IF_TEXT_WIDTH,
            encoder_hid_dim_type="text_proj",
            cross_attention_dim=IF_CROSS_ATTENTION_DIM,
            attention_head_dim=8,
            norm_num_groups=4,
        )
    finally:
        torch.random.set_rng_state(gen_state)

    scheduler = DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        variance_type="learned_range",
        prediction_type="epsilon",
        clip_sample=True,
        thresholding=True,
        dynamic_thresholding_ratio=0.95,
        sample_max_value=1.5,
    )
    text_encoder.save_pretrained(path / "text_encoder")
    unet.save_pretrained(path / "unet")
    scheduler.save_pretrained(path / "scheduler")

    write_model_index(path, "IFPipeline", {"scheduler": scheduler, "text_encoder": text_encoder, "unet": unet},
                      feature_extractor=[None, None], watermarker=[None, None], tokenizer=["transformers", "T5TokenizerFast"])
    return path


def write_model_index(path: Path, class_name: str, components: dict, **entries) -> None:
    """model_index.json naming each component's library and class, as a pipeline's save_pretrained does."""
    import diffusers

    index = {"_class_name": class_name, "_diffusers_version": diffusers.__version__,
             "requires_safety_checker": False, "safety_checker": [None, None], **entries}
    for name, component in components.items():
        index[name] = [type(component).__module__.split(".")[0], type(component).__name__]
    (path / "model_index.json").write_text(json.dumps(dict(sorted(index.items())), indent=2) + "\n", encoding="utf-8")


__all__ = ["save_tiny_stable_diffusion", "save_tiny_deepfloyd_if", "MODEL_MAX_LENGTH", "TEXT_HIDDEN_SIZE",
           "IF_TEXT_WIDTH", "IF_WORDS"]
