"""Prompts for a run: view-dependent variants, negative prompt, the per-step Conditions, and the
on-disk text-embedding cache (so a text encoder is loaded once per model and prompt, ever)."""

import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from sds3d.atomic import atomic_write
from sds3d.cameras import VIEWS, Cameras, view_labels
from sds3d.errors import ConfigError

log = logging.getLogger("sds3d")


@dataclass
class PerpNegatives:
    """Perp-Neg's view negatives: N embeddings per row and their (non-positive) weights."""

    embeddings: torch.Tensor  # [N, B, L, D]
    weights: torch.Tensor  # [N, B]


@dataclass
class Regions:
    """A layout's regions for one step: each sub-prompt (with its object's view suffix) and the render's
    semantic map; ``mix`` is set by the semantic objective (see sds3d.objectives.semantic)."""

    cond: torch.Tensor  # [K, B, L, D]
    semantic: Optional[torch.Tensor] = None  # [B, H, W, K] composited region codes of the render
    mix: Optional[torch.Tensor] = None  # [K + 1, B, 1, h, w] per-pixel weights of each region's eps and of cond's


@dataclass
class Conditions:
    """The embeddings one step needs, each [B, L, D] with one row per view in the batch."""

    cond: torch.Tensor  # the (view-dependent) prompt; with Perp-Neg, interpolated between views by azimuth
    negative: torch.Tensor  # what CFG pushes away from: the negative prompt, or "" without one
    empty: torch.Tensor  # always the empty prompt
    no_view: torch.Tensor  # the prompt with no view suffix
    camera: torch.Tensor  # [B, 16] flattened camera-to-world matrices (VSD's camera condition)
    labels: List[str]  # view label of each row
    perp_neg: Optional[PerpNegatives] = None
    regions: Optional[Regions] = None  # with a layout
    cameras: Optional[Cameras] = None  # the batch's cameras, for guides that condition on the view (``view_aware``)
    image: Optional[torch.Tensor] = None  # [B, D] the image prompt's embedding (prompt.image), seen on the prompt's side


class EmbeddingCache:
    """Embeddings stored as ``<cache_dir>/text_embeddings/<sha256(model, prompt)>.pt`` on CPU."""

    def __init__(self, cache_dir: str, model_key: str):
        self.folder = Path(cache_dir).expanduser() / "text_embeddings"
        self.model_key = model_key

    def path(self, prompt: str) -> Path:
        digest = hashlib.sha256(f"{self.model_key}\n{prompt}".encode()).hexdigest()[:32]
        return self.folder / f"{digest}.pt"

    def get(self, prompt: str) -> Optional[torch.Tensor]:
        """The cached embedding, or None when there is none or the entry cannot be read (it is then recomputed)."""
        path = self.path(prompt)
        if not path.is_file():
            return None
        try:
            embedding = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a truncated or foreign file: torch raises several kinds
            log.warning("text-embedding cache entry %s is unreadable (%s): recomputing it", path, type(exc).__name__)
            return None
        return embedding if isinstance(embedding, torch.Tensor) else None

    def put(self, prompt: str, embedding: torch.Tensor) -> None:
        """Stores the embedding; a cache folder that cannot be written only costs the cache, with a warning."""
        try:
            with atomic_write(self.path(prompt)) as tmp:
                torch.save(embedding.detach().float().cpu(), tmp)
        except OSError as exc:
            log.warning("cannot write the text-embedding cache in %s (%s): embeddings are recomputed next time",
                        self.folder, exc.strerror or exc)


def view_prompt(prompt: str, label: str) -> str:
    return f"{prompt}, {label} view"


def decay(coefficients: Sequence[float], r: float) -> float:
    """Perp-Neg's negative weight f(r) = a exp(-b r) + c."""
    a, b, c = coefficients
    return a * math.exp(-b * r) + c


def perp_neg_views(azimuth: float, label: str, cfg) -> tuple:
    """For one camera: the positive prompt as a mix {view: coefficient} and two negatives [(view, weight)].

    Front to side (|a| < 90): r = 1 - |a|/90 mixes front (r) with side, negatives front -f_fs(r) and
    side -f_sf(1 - r). Side to back: r = 2 - |a|/90 mixes side (r) with back, negatives side -f_sb(r)
    and front -f_fsb(r). Overhead views take their own prompt and zero-weight negatives.
    """
    if label == "overhead":
        return {"overhead": 1.0}, [("front", 0.0), ("side", 0.0)]
    a = abs(math.remainder(azimuth, 360.0))
    if a < 90.0:
        r = 1.0 - a / 90.0
        return {"front": r, "side": 1.0 - r}, [("front", -decay(cfg.f_fs, r)), ("side", -decay(cfg.f_sf, 1.0 - r))]
    r = 2.0 - a / 90.0
    return {"side": r, "back": 1.0 - r}, [("side", -decay(cfg.f_sb, r)), ("front", -decay(cfg.f_fsb, r))]


class PromptSet:
    """Embeds every prompt a run uses once, then hands out Conditions for a batch of cameras."""

    def __init__(self, guide, cfg, layout=None, object_views: bool = True):
        """``layout`` (sds3d.layout.Layout) adds each region's sub-prompt, per view, to the Conditions;
        ``object_views`` takes each region's view suffix from its own object's frame, else the camera's."""
        self.cfg, self.layout, self.object_views = cfg, layout, object_views
        if cfg.perp_neg.enabled and not getattr(guide, "interpolates_embeddings", True):
            raise ConfigError(f"Perp-Neg mixes text embeddings, which the guide '{getattr(guide, 'model', guide)}' does not have",
                              hint="prompt.perp_neg.enabled=false, or a text-to-image model as guide.model")
        restrict = getattr(guide, "known_words_only", None)
        self.negative = restrict(cfg.negative) if cfg.negative and restrict else cfg.negative
        texts = [cfg.text, self.negative, ""] + [view_prompt(cfg.text, v) for v in VIEWS]
        for region in layout.regions if layout else []:
            texts += [region.prompt] + [view_prompt(region.prompt, v) for v in VIEWS]
        texts = list(dict.fromkeys(texts))
        self.embeddings: Dict[str, torch.Tensor] = dict(zip(texts, guide.embed(texts)))
        self.image = guide.image_adapter.embed(cfg.image) if cfg.image else None  # config validation pairs it with an adapter

    def conditions(self, cameras: Cameras, semantic: Optional[torch.Tensor] = None) -> Conditions:
        """``semantic`` [B, H, W, K]: the render's region codes, carried with the region prompts."""
        labels = self._labels(cameras.elevation, cameras.azimuth)
        regions = self._regions(cameras, labels, semantic) if self.layout else None
        return self._conditions(self.cfg.text, cameras, labels, cameras.azimuth, regions)

    def region_conditions(self, cameras: Cameras, index: int) -> Conditions:
        """The layout's region ``index`` (an object, or a part of one) alone, for a zoomed view (``layout/zoom.py``):
        its own prompt with the view suffix seen from its centre in its object's frame, in place of the scene's;
        no region map."""
        region = self.layout.regions[index]
        elevation, azimuth = self.layout.objects[region.obj].view_angles(cameras.position.cpu(), region.box.center)
        return self._conditions(region.prompt, cameras, self._labels(elevation, azimuth), azimuth, None)

    def _labels(self, elevation: torch.Tensor, azimuth: torch.Tensor) -> List[str]:
        cfg = self.cfg
        return view_labels(elevation, azimuth, cfg.front_threshold, cfg.back_threshold, cfg.overhead_threshold)

    def _conditions(self, text: str, cameras: Cameras, labels: List[str], azimuth: torch.Tensor,
                    regions: Optional[Regions]) -> Conditions:
        cfg, batch = self.cfg, len(labels)
        cond = torch.stack([self.embeddings[view_prompt(text, label) if cfg.view_dependent else text] for label in labels])
        perp_neg = None
        if cfg.perp_neg.enabled:
            cond, perp_neg = self._perp_neg(text, azimuth.tolist(), labels)
        return Conditions(
            cond=cond,
            negative=self.embeddings[self.negative].expand(batch, -1, -1),
            empty=self.embeddings[""].expand(batch, -1, -1),
            no_view=self.embeddings[text].expand(batch, -1, -1),
            camera=cameras.c2w.reshape(batch, 16).to(cond.device),
            labels=labels,
            perp_neg=perp_neg,
            regions=regions,
            cameras=cameras,
            image=None if self.image is None else self.image.expand(batch, -1),
        )

    def _regions(self, cameras: Cameras, labels: List[str], semantic: Optional[torch.Tensor]) -> Regions:
        """Each region's prompt with the view suffix of its own object's frame (``object_views``), else the camera's."""
        cfg, rows = self.cfg, []
        for region in self.layout.regions:
            region_labels = labels
            if cfg.view_dependent and self.object_views:
                region_labels = self._labels(*self.layout.objects[region.obj].view_angles(cameras.position.cpu()))
            prompts = [view_prompt(region.prompt, label) if cfg.view_dependent else region.prompt for label in region_labels]
            rows.append(torch.stack([self.embeddings[p] for p in prompts]))
        return Regions(torch.stack(rows), None if semantic is None else semantic.detach())

    def _perp_neg(self, text: str, azimuths: List[float], labels: List[str]):
        view = {v: self.embeddings[view_prompt(text, v)] for v in VIEWS}
        positives, negatives, weights = [], [], []
        for azimuth, label in zip(azimuths, labels):
            mix, negs = perp_neg_views(azimuth, label, self.cfg.perp_neg)
            positives.append(sum(c * view[v] for v, c in mix.items()))
            negatives.append(torch.stack([view[v] for v, _ in negs]))
            weights.append([w for _, w in negs])
        embeddings = torch.stack(negatives, dim=1)  # [2, B, L, D]
        return torch.stack(positives), PerpNegatives(embeddings, torch.tensor(weights, device=embeddings.device).T)
