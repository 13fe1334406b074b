"""The Bayes-optimal denoiser of a finite image set, as a Guide: exact noise predictions for the
benchmark world with no training, for tests and as the upper bound of what a trained prior can give.

Given the cameras of the views it judges (``view_aware``), a prompt's set is the scene rendered from each
view's own camera and a few neighbours, the exact denoiser of the caption's images near that camera:
the true object is then a fixed point of score distillation, so a run measures the pipeline, not the
coverage of a finite set. Without cameras (the 2D playground) the set is a fixed draw of training views.

With x_t = a_t x_0 + s_t eps and x_0 drawn uniformly from the set {x_i} (pixel space, [-1, 1]):
E[x_0 | x_t] = sum_i softmax_i(-||x_t - a_t x_i||^2 / (2 s_t^2)) x_i and eps = (x_t - a_t E[x_0 | x_t]) / s_t,
where a_t = sqrt(abar_t), s_t = sqrt(1 - abar_t).
"""

import hashlib
import logging
from typing import Dict, List, Tuple

import torch
from omegaconf import OmegaConf

from sds3d.cameras import VIEWS, Cameras, make_cameras, sample_cameras, view_labels
from sds3d.config_schema import CameraConfig
from sds3d.errors import ConfigError
from sds3d.guides.pixel import pixel_decode, pixel_encode
from sds3d.world.render import render_scenes
from sds3d.world.scenes import parse_caption

log = logging.getLogger("sds3d")

_UNION = 0  # the set id of the empty prompt
_ID_RANGE = 2**24  # set ids are 1 .. 2^24, exact in float32


def stable_id(prompt: str) -> int:
    """A prompt's set id, the same in every process (so an amortized generator can read it as the prompt's embedding)."""
    return int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big") % _ID_RANGE + 1
# (elevation, azimuth) offsets in degrees of a view's neighbours, the view itself first.
NEIGHBOURS = ((0.0, 0.0), (0.0, 10.0), (0.0, -10.0), (5.0, 0.0), (-5.0, 0.0))
_FORM = ("world captions: 'a <colour> <shape>', 'a <colour> <shape> to the left of a <colour> <shape>' or "
         "'... on top of ...', optionally followed by ', <front|side|back|overhead> view'")


class ExactDenoiserGuide:
    """Exact posterior-mean denoiser of world renders; ``guide.model=exact:world[@resolution]``.

    A prompt's image set is ``views`` renders (shading "diffuse", as the bundled prior's training
    images) of its caption's scene from the base config's training cameras, drawn with a fixed seed;
    a view suffix keeps the renders whose view label matches (all of them when the camera
    distribution never shows that view). The empty prompt "" is the union of every set embedded so
    far, taken when predicting, so that classifier-free guidance has an unconditional model.
    Embeddings are set ids [P, 1, 1], opaque to objectives.
    """

    interpolates_embeddings = False  # embeddings are image-set ids
    latent = False
    view_aware = True  # predict_noise takes the views' cameras

    def __init__(self, device: torch.device, resolution: int = 32, views: int = 64, seed: int = 0):
        from diffusers import DDPMScheduler

        scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
        self.alphas_cumprod = scheduler.alphas_cumprod.to(device=device, dtype=torch.float32)
        self.device, self.resolution, self.views, self.seed = torch.device(device), resolution, views, seed
        self.cameras = OmegaConf.structured(CameraConfig)  # a default run's cameras
        self._renders: Dict[str, Tuple[torch.Tensor, List[str]]] = {}  # scene caption -> images [V, 3, r, r], labels
        self._sets: Dict[int, Tuple[str, torch.Tensor]] = {}  # set id -> (scene caption, render indices)
        self._ids: Dict[str, int] = {"": _UNION}

    @classmethod
    def from_spec(cls, spec: str, device: torch.device) -> "ExactDenoiserGuide":
        """``exact:world`` or ``exact:world@<resolution>``."""
        name, _, resolution = spec.removeprefix("exact:").partition("@")
        if name != "world" or not (resolution == "" or (resolution.isdigit() and int(resolution) > 0)):
            raise ConfigError(f"unknown exact guide '{spec}'",
                              hint="use guide.model=exact:world or exact:world@<resolution>, e.g. exact:world@64")
        guide = cls(device, int(resolution or 32))
        log.info("guide: exact denoiser of world renders on %s, %d px, %d views per prompt", device, guide.resolution, guide.views)
        return guide

    def encode(self, rgb: torch.Tensor) -> torch.Tensor:
        return pixel_encode(rgb, self.resolution)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return pixel_decode(x)

    def embed(self, prompts: List[str]) -> torch.Tensor:
        return torch.tensor([float(self._set_id(p)) for p in prompts], device=self.device).view(-1, 1, 1)

    def _set_id(self, prompt: str) -> int:
        if prompt not in self._ids:
            text, _, suffix = prompt.partition(",")
            label = suffix.strip().removesuffix(" view")
            try:
                caption = parse_caption(text).caption
            except ValueError as exc:
                raise ConfigError(f"the exact world guide cannot read the prompt '{prompt}': {exc}", hint=f"use {_FORM}") from exc
            if suffix and label not in VIEWS:
                raise ConfigError(f"the exact world guide cannot read the view suffix of '{prompt}'", hint=f"use {_FORM}")
            labels = self._render(caption)[1]
            keep = [i for i, view in enumerate(labels) if view == label] if suffix else []
            set_id = stable_id(prompt)
            while set_id in self._sets:  # a hash collision: the next free id
                set_id = set_id % _ID_RANGE + 1
            self._sets[set_id] = (caption, torch.tensor(keep or list(range(len(labels))), device=self.device))
            self._ids[prompt] = set_id
        return self._ids[prompt]

    def _render(self, caption: str) -> Tuple[torch.Tensor, List[str]]:
        if caption not in self._renders:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                cameras = sample_cameras(self.cameras, self.resolution, self.resolution, batch_size=self.views)
            rgb = render_scenes([parse_caption(caption)] * self.views, cameras).rgb
            images = (rgb.permute(0, 3, 1, 2) * 2.0 - 1.0).to(self.device)
            self._renders[caption] = images, view_labels(cameras.elevation, cameras.azimuth)
        return self._renders[caption]

    def images(self, set_id: int) -> torch.Tensor:
        """The image set [N, 3, r, r] in [-1, 1] behind an embedding's id."""
        if set_id != _UNION:
            caption, keep = self._sets[set_id]
            return self._renders[caption][0][keep]
        if not self._sets:
            raise ConfigError("the exact world guide has no image set for the empty prompt yet", hint=f"embed {_FORM} first")
        union: Dict[str, List[torch.Tensor]] = {}
        for caption, keep in self._sets.values():
            union.setdefault(caption, []).append(keep)
        return torch.cat([self._renders[c][0][torch.cat(k).unique()] for c, k in union.items()])

    def captions(self, set_id: int) -> List[str]:
        """The scene captions behind an embedding's id (every one embedded so far for the empty prompt)."""
        if set_id != _UNION:
            return [self._sets[set_id][0]]
        return list(dict.fromkeys(caption for caption, _ in self._sets.values()))

    def view_renders(self, caption: str, cameras: Cameras, b: int) -> torch.Tensor:
        """The caption's scene [N, 3, r, r] in [-1, 1] seen from camera ``b`` of ``cameras`` and its ``NEIGHBOURS``."""
        offsets = torch.tensor(NEIGHBOURS)
        count = len(offsets)
        near = make_cameras(cameras.elevation[b].cpu() + offsets[:, 0], cameras.azimuth[b].cpu() + offsets[:, 1],
                            cameras.distance[b].cpu().expand(count), cameras.fovy[b].cpu().expand(count),
                            self.resolution, self.resolution)
        rgb = render_scenes([parse_caption(caption)] * count, near).rgb
        return (rgb.permute(0, 3, 1, 2) * 2.0 - 1.0).to(self.device)

    @torch.no_grad()
    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, embeddings: torch.Tensor, cameras: Cameras = None) -> torch.Tensor:
        conditions, batch = embeddings.shape[:2]
        ids = embeddings.reshape(conditions, batch).round().long()
        shape = (batch,) + (1,) * (x_t.dim() - 1)
        a = self.alphas_cumprod[t].sqrt().view(shape)
        s = (1.0 - self.alphas_cumprod[t]).sqrt().view(shape)
        x0 = torch.empty(conditions, *x_t.shape, device=x_t.device)
        renders: Dict[Tuple[str, int], torch.Tensor] = {}  # (caption, batch item) -> its views, shared by the conditions

        def view_set(caption: str, item: int) -> torch.Tensor:
            if (caption, item) not in renders:
                renders[caption, item] = self.view_renders(caption, cameras, item)
            return renders[caption, item]

        for set_id in ids.unique().tolist():
            c, b = (ids == set_id).nonzero(as_tuple=True)
            if cameras is None:
                x0[c, b] = posterior_mean(self.images(set_id), x_t[b].float(), a[b], s[b])
                continue
            for item in b.unique().tolist():
                images = torch.cat([view_set(caption, item) for caption in self.captions(set_id)])
                rows = c[b == item]
                mean = posterior_mean(images, x_t[item : item + 1].float(), a[item : item + 1], s[item : item + 1])
                x0[rows, item] = mean.expand(len(rows), *mean.shape[1:])
        return (x_t.float()[None] - a[None] * x0) / s[None]


def posterior_mean(images: torch.Tensor, x_t: torch.Tensor, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """E[x_0 | x_t] [M, ...] for x_0 uniform over ``images`` [N, ...]; ``a``, ``s`` broadcast over x_t."""
    # Direct differences, not the |x|^2 - 2xy + |y|^2 expansion: at small t the logits divide by s^2
    # and the expansion's cancellation error would decide the softmax.
    distances = (x_t[:, None] - a[:, None] * images[None]).pow(2).flatten(2).sum(-1)  # [M, N]
    weights = torch.softmax(-distances / (2.0 * s.flatten()[:, None] ** 2), dim=-1)
    return torch.einsum("mn,n...->m...", weights, images)
