"""Grounding losses for training the prior (TokenCompose's token and pixel losses, Wang et al. 2024, in the
forms below), so a pair's colours bind to their objects instead of bleeding into each other: each object's
colour and shape words attend to that object's pixels (the token loss), and that object's pixels attend
to those words (the pixel loss; both ``grounding_losses``) rather than taking their colour from words that carry the whole
caption (the end token).

The UNet stays a plain diffusers UNet: the loss only changes what its cross-attention learns, so the prior
loads and guides as before."""

from typing import List, Sequence

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from transformers import PreTrainedTokenizerFast

from sds3d.world.scenes import COLORS, SHAPES


class CrossAttentionRecorder(AttnProcessor2_0):
    """Diffusers' attention, plus the head-averaged cross-attention maps [B, H*W, T] of every call in ``maps``."""

    def __init__(self):
        super().__init__()
        self.maps: List[torch.Tensor] = []

    def __call__(self, attn: Attention, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
        mask = attn.prepare_attention_mask(attention_mask, encoder_hidden_states.shape[1], hidden_states.shape[0])
        probs = attn.get_attention_scores(query, key, mask)
        self.maps.append(probs.unflatten(0, (hidden_states.shape[0], attn.heads)).mean(1))
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)


def record_cross_attention(unet: UNet2DConditionModel) -> CrossAttentionRecorder:
    """Puts one recorder on every cross-attention layer (``attn2``); the self-attention layers keep theirs."""
    recorder = CrossAttentionRecorder()
    unet.set_attn_processor({name: recorder if name.endswith("attn2.processor") else processor
                             for name, processor in unet.attn_processors.items()})
    return recorder


def object_token_matrix(tokenizer: PreTrainedTokenizerFast, captions: Sequence[str], grounded: Sequence[bool],
                        objects: int = 2) -> torch.Tensor:
    """[B, T, K]: 1 where token t of caption b is object k's colour or shape word (the k-th of each in the
    caption, as a world caption names its objects in order); all 0 for captions not ``grounded``."""
    ids = tokenizer(list(captions), padding="max_length", max_length=tokenizer.model_max_length, truncation=True).input_ids
    colours, shapes = set(tokenizer.convert_tokens_to_ids(list(COLORS))), set(tokenizer.convert_tokens_to_ids(list(SHAPES)))
    matrix = torch.zeros(len(captions), tokenizer.model_max_length, objects)
    for b, (row, keep) in enumerate(zip(ids, grounded)):
        if not keep:
            continue
        seen = {"colour": 0, "shape": 0}
        for t, token in enumerate(row):
            kind = "colour" if token in colours else "shape" if token in shapes else None
            if kind is not None and seen[kind] < objects:
                matrix[b, t, seen[kind]] = 1.0
                seen[kind] += 1
    return matrix


def object_masks(object_ids: torch.Tensor, objects: int = 2) -> torch.Tensor:
    """[B, H, W] object index (-1 background) -> one-hot masks [B, K, H, W]."""
    return torch.stack([(object_ids == k).float() for k in range(objects)], dim=1)


def grounding_losses(maps: Sequence[torch.Tensor], token_objects: torch.Tensor, masks: torch.Tensor):
    """(token loss, pixel loss), each a mean over the maps: the token loss over grounded tokens of (1 - the share of
    the token's attention on its object)^2, the pixel loss over the grounded objects' pixels of (1 - the share of the
    pixel's attention on its own object's words)^2. Both zero when nothing is grounded.

    ``maps``: [B, h*w, T] each (any square resolution that divides the masks'); ``token_objects``: [B, T, K];
    ``masks``: [B, K, H, W]."""
    if not token_objects.any():
        return masks.new_zeros(()), masks.new_zeros(())
    grounded_tokens = token_objects.sum(-1) > 0  # [B, T]
    grounded_objects = (token_objects.sum(1) > 0).float()[..., None]  # [B, K, 1]
    token_losses, pixel_losses = [], []
    for attention in maps:
        region = F.adaptive_avg_pool2d(masks, int(round(attention.shape[1] ** 0.5))).flatten(2)  # [B, K, h*w]
        inside = (attention.transpose(1, 2) * (token_objects @ region)).sum(-1) / attention.sum(1).clamp(min=1e-8)  # [B, T]
        token_losses.append(((1.0 - inside) ** 2)[grounded_tokens].mean())
        own = (attention @ token_objects).transpose(1, 2)  # [B, K, h*w]: each pixel's attention on object k's words
        pixels = region * grounded_objects
        pixel_losses.append((pixels * (1.0 - own) ** 2).sum() / pixels.sum().clamp(min=1e-8))
    return torch.stack(token_losses).mean(), torch.stack(pixel_losses).mean()
