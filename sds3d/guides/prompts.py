"""Prompts for a run: view-dependent variants, negative prompt, the per-step Conditions, and the
on-disk text-embedding cache (so a text encoder is loaded once per model and prompt, ever)."""

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import torch

from sds3d.atomic import atomic_write
from sds3d.cameras import VIEWS, Cameras, view_labels


@dataclass
class Conditions:
    """The embeddings one step needs, each [B, L, D] with one row per view in the batch."""

    cond: torch.Tensor  # the (view-dependent) prompt
    uncond: torch.Tensor  # what CFG pushes away from: the negative prompt, or "" without one
    null: torch.Tensor  # always the empty prompt
    labels: List[str]  # view label of each row


class EmbeddingCache:
    """Embeddings stored as ``<cache_dir>/text_embeddings/<sha256(model, prompt)>.pt`` on CPU."""

    def __init__(self, cache_dir: str, model_key: str):
        self.folder = Path(cache_dir).expanduser() / "text_embeddings"
        self.model_key = model_key

    def path(self, prompt: str) -> Path:
        digest = hashlib.sha256(f"{self.model_key}\n{prompt}".encode()).hexdigest()[:32]
        return self.folder / f"{digest}.pt"

    def get(self, prompt: str) -> Optional[torch.Tensor]:
        path = self.path(prompt)
        return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None

    def put(self, prompt: str, embedding: torch.Tensor) -> None:
        with atomic_write(self.path(prompt)) as tmp:
            torch.save(embedding.detach().float().cpu(), tmp)


def view_prompt(prompt: str, label: str) -> str:
    return f"{prompt}, {label} view"


class PromptSet:
    """Embeds every prompt a run uses once, then hands out Conditions for a batch of cameras."""

    def __init__(self, guide, cfg):
        self.cfg = cfg
        texts = [cfg.text, cfg.negative, ""] + [view_prompt(cfg.text, v) for v in VIEWS]
        self.embeddings: Dict[str, torch.Tensor] = dict(zip(texts, guide.embed(texts)))

    def conditions(self, cameras: Cameras) -> Conditions:
        cfg = self.cfg
        labels = view_labels(cameras.elevation, cameras.azimuth, cfg.front_threshold, cfg.back_threshold, cfg.overhead_threshold)
        prompts = [view_prompt(cfg.text, label) if cfg.view_dependent else cfg.text for label in labels]
        batch = len(labels)
        cond = torch.stack([self.embeddings[p] for p in prompts])
        null = self.embeddings[""].expand(batch, -1, -1)
        uncond = self.embeddings[cfg.negative].expand(batch, -1, -1)
        return Conditions(cond=cond, uncond=uncond, null=null, labels=labels)
