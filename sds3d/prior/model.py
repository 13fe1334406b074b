"""The bundled prior's architecture: a pixel-space diffusers UNet conditioned on a small text encoder over the
world's words (CLIP-style, causal; or T5-style, bidirectional), with a word-level tokenizer. Saved in diffusers'
folder layout (unet/, text_encoder/, tokenizer/, scheduler/) so it loads like any other model."""

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from diffusers import DDIMScheduler, UNet2DConditionModel
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedModel, PreTrainedTokenizerFast, T5Config, T5EncoderModel

from sds3d.cameras import CAMERA_FEATURES
from sds3d.prior.degrade import degradation_words
from sds3d.world.scenes import vocabulary

SPECIAL = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")
MAX_TOKENS = 32  # NFSD's negative prompt is 24 tokens; a pair caption with a view and two degradations about 20


def prior_words() -> list:
    """The world's words, then the degradation words it lacks: appended, so the first prior's token ids hold."""
    world = vocabulary()
    return world + [w for w in degradation_words() if w not in world]


@dataclass
class Prior:
    unet: UNet2DConditionModel
    text_encoder: PreTrainedModel  # CLIPTextModel or T5EncoderModel (TEXT_ENCODERS)
    tokenizer: PreTrainedTokenizerFast
    scheduler: DDIMScheduler

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        copy.deepcopy(self.unet).half().save_pretrained(folder / "unet")  # fp16 on disk keeps the bundle small
        self.text_encoder.save_pretrained(folder / "text_encoder")
        self.tokenizer.save_pretrained(folder / "tokenizer")
        self.scheduler.save_pretrained(folder / "scheduler")
        index = {"_class_name": "Sds3dPixelPrior", "unet": ["diffusers", "UNet2DConditionModel"],
                 "text_encoder": ["transformers", type(self.text_encoder).__name__],
                 "tokenizer": ["transformers", "PreTrainedTokenizerFast"], "scheduler": ["diffusers", "DDIMScheduler"]}
        (folder / "model_index.json").write_text(json.dumps(index, indent=2))


def build_tokenizer(words=None) -> PreTrainedTokenizerFast:
    """Word-level: one token per world or degradation word; anything else is [UNK], which the guide reports."""
    vocab = {w: i for i, w in enumerate([*SPECIAL, *(words or prior_words())])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", vocab["[BOS]"]), ("[EOS]", vocab["[EOS]"])]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                   bos_token="[BOS]", eos_token="[EOS]", model_max_length=MAX_TOKENS)


def clip_encoder(tokenizer: PreTrainedTokenizerFast, width: int) -> CLIPTextModel:
    """Two causal layers: a token sees only the words before it, so "sphere" in "... on top of a yellow sphere"
    can carry "yellow", but "yellow" never learns which object it colours."""
    return CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=MAX_TOKENS, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    ))


def t5_encoder(tokenizer: PreTrainedTokenizerFast, width: int) -> T5EncoderModel:
    """Three bidirectional layers with relative positions, as DeepFloyd IF's T5 (used with a padding mask): each
    word sees its neighbours on both sides, so a colour and its shape can bind into one another's embedding.

    The relative-position bias starts as ALiBi's distance penalty (Press et al., head h: -4^-(h+1) per word of
    distance) instead of T5's near-zero init: with near-zero biases and query weights the attention is close to
    uniform, which is blind to word order, and a run from that init still encoded the shapes of "a green cube on
    top of a yellow sphere" and of the same with the colours swapped alike after 2000 steps (cosine 1.00)."""
    encoder = T5EncoderModel(T5Config(
        vocab_size=len(tokenizer), d_model=width, d_kv=width // 4, d_ff=2 * width, num_layers=3, num_heads=4,
        relative_attention_num_buckets=16, relative_attention_max_distance=MAX_TOKENS, dropout_rate=0.0,
        feed_forward_proj="gated-gelu", pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id, use_cache=False,
    ))
    attention = encoder.encoder.block[0].layer[0].SelfAttention  # the one relative-position bias every layer shares
    relative = torch.arange(-MAX_TOKENS, MAX_TOKENS + 1)
    buckets = attention._relative_position_bucket(relative, bidirectional=True, num_buckets=attention.relative_attention_num_buckets,
                                                  max_distance=attention.relative_attention_max_distance)
    distance = torch.stack([relative[buckets == k].abs().float().mean().nan_to_num()  # an empty bucket: 0
                            for k in range(attention.relative_attention_num_buckets)])
    slopes = 2.0 ** (-2.0 * torch.arange(1, attention.n_heads + 1))
    with torch.no_grad():
        attention.relative_attention_bias.weight.copy_(-distance[:, None] * slopes[None])
    return encoder


TEXT_ENCODERS = {"clip": clip_encoder, "t5": t5_encoder}


def build_prior(resolution: int = 32, channels=(32, 64, 64), text_width: int = 64, text_encoder: str = "clip") -> Prior:
    """About 1.7M UNet + 0.07M (clip) or 0.1M (t5) text-encoder parameters at the defaults.

    Camera-conditioned, as MVDream's and Zero-1-to-3's UNets are: ``camera_features`` go through a
    projection class embedding added to the time embedding. Without it the prior cannot know a view's
    distance and field of view, so its score pulls every render towards the average object size of all
    training cameras. The embedding's output layer starts at zero: a new prior starts camera-blind."""
    if text_encoder not in TEXT_ENCODERS:
        raise ValueError(f"unknown text encoder {text_encoder!r}; choose one of {', '.join(TEXT_ENCODERS)}")
    tokenizer = build_tokenizer()
    unet = UNet2DConditionModel(
        sample_size=resolution, in_channels=3, out_channels=3, block_out_channels=tuple(channels), layers_per_block=1,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (len(channels) - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (len(channels) - 1) + ("UpBlock2D",),
        cross_attention_dim=text_width, attention_head_dim=8, norm_num_groups=8,
        class_embed_type="projection", projection_class_embeddings_input_dim=CAMERA_FEATURES,
    )
    nn.init.zeros_(unet.class_embedding.linear_2.weight)
    nn.init.zeros_(unet.class_embedding.linear_2.bias)
    # Cosine schedule: the linear one leaves too little signal at high t for small pixel-space images.
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="epsilon",
                              clip_sample=False, set_alpha_to_one=False)
    return Prior(unet, TEXT_ENCODERS[text_encoder](tokenizer, text_width), tokenizer, scheduler)
