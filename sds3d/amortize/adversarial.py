"""ET3D's route to an amortized generator: the guide's own samples of each prompt, from cameras drawn as training's,
are the real images of a discriminator conditioned on the prompt and the view; the generator's renders learn to pass
it. Non-saturating GAN loss with an R1 penalty on the real images.

It stands where an objective stands in the loop (``forward(guide, x, conditions, step) -> ObjectiveOutput``): the
generator's loss is the objective's, and the discriminator's own loss travels in ``aux`` to its parameters, which the
loop's optimiser holds (as VSD's LoRA). The discriminator's weights are detached when it judges for the generator, so
neither loss reaches the other's parameters.
"""

from pathlib import Path
from typing import List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call
from tqdm import tqdm

from sds3d.amortize.generator import TextGenerator
from sds3d.atomic import atomic_write
from sds3d.cameras import Cameras, sample_cameras, view_labels
from sds3d.guides.prompts import view_prompt
from sds3d.objectives.base import ObjectiveOutput
from sds3d.prior.sample import sample_images

SAMPLE_BATCH = 64  # guide samples drawn together


def shifted(images: torch.Tensor, pixels: int) -> torch.Tensor:
    """DiffAugment's translation: each image moved by up to ``pixels`` each way, the border filled with its edge
    (differentiable; with so few real images per prompt it keeps the discriminator from memorising them)."""
    if pixels <= 0:
        return images
    b, _, h, w = images.shape
    padded = F.pad(images, [pixels] * 4, mode="replicate")
    dx, dy = (torch.randint(0, 2 * pixels + 1, (b,), device=images.device) for _ in range(2))
    rows = (torch.arange(h, device=images.device) + dy[:, None])[:, :, None].expand(b, h, w)
    cols = (torch.arange(w, device=images.device) + dx[:, None])[:, None, :].expand(b, h, w)
    index = (rows * (w + 2 * pixels) + cols).flatten(1)[:, None].expand(-1, images.shape[1], -1)
    return padded.flatten(2).gather(2, index).view_as(images)


def view_features(cameras: Cameras) -> torch.Tensor:
    """[B, 3]: the view's azimuth as sin and cos, and its elevation as a fraction of a right angle."""
    azimuth, elevation = torch.deg2rad(cameras.azimuth.float()), cameras.elevation.float() / 90.0
    return torch.stack([azimuth.sin(), azimuth.cos(), elevation], dim=-1)


class Discriminator(nn.Module):
    """A projection discriminator on [B, 3, r, r] images in [-1, 1]: D = w . f(x) + <c(text, view), f(x)>."""

    def __init__(self, resolution: int, embedding_dim: int, width: int = 32):
        super().__init__()
        layers, channels, size = [], 3, resolution
        for out in (width, 2 * width, 4 * width):
            layers += [nn.Conv2d(channels, out, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            channels, size = out, size // 2
        self.features = nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels * size * size, 4 * width), nn.LeakyReLU(0.2))
        self.score = nn.Linear(4 * width, 1)
        self.condition = nn.Linear(embedding_dim + 3, 4 * width)

    def forward(self, images: torch.Tensor, text: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        f = self.features(images)
        return self.score(f)[:, 0] + (self.condition(torch.cat([text, views], dim=-1)) * f).sum(-1)


class AdversarialObjective(nn.Module):
    """The generator's GAN loss against the guide's samples (``images``, ``views``) of the prompt ``generator`` shows
    this step."""

    def __init__(self, cfg, guide, generator: TextGenerator, prompts: List[str], samples_file: Path):
        super().__init__()
        gan, codes = cfg.amortize.gan, generator.input_codes
        # Callables, not the generator itself: as a submodule its parameters would join the discriminator's.
        self.shown, self.text = lambda: codes.index, lambda index: codes.standardised(codes.embeddings[index])
        self.r1, self.weight, self.lr, self.shift = gan.r1, gan.weight, gan.lr, gan.shift
        self.discriminator = Discriminator(guide.resolution, codes.embeddings.shape[1])
        images, views = guide_samples(cfg, guide, prompts, samples_file)
        self.register_buffer("images", images.to(guide.device), persistent=False)  # [P, V, 3, r, r] in [-1, 1]
        self.register_buffer("views", views, persistent=False)  # [P, V, 3]

    def forward(self, guide, x: torch.Tensor, conditions, step: int) -> ObjectiveOutput:
        index, batch = self.shown(), x.shape[0]
        pick = torch.randint(self.images.shape[1], (batch,), device=self.images.device)
        real = self.images[index, pick].detach().requires_grad_(self.r1 > 0)
        text, fake_views = self.text(index).expand(batch, -1), view_features(conditions.cameras).to(x.device)
        real_score = self.discriminator(shifted(real, self.shift), text, self.views[index, pick])
        fake_score = self.discriminator(shifted(x.detach(), self.shift), text, fake_views)
        d_loss = F.softplus(fake_score).mean() + F.softplus(-real_score).mean()
        if self.r1 > 0:
            (grad,) = torch.autograd.grad(real_score.sum(), real, create_graph=True)
            d_loss = d_loss + 0.5 * self.r1 * grad.pow(2).flatten(1).sum(1).mean()
        frozen = {name: p.detach() for name, p in self.discriminator.named_parameters()}
        g_loss = F.softplus(-functional_call(self.discriminator, frozen, (shifted(x, self.shift), text, fake_views))).mean()
        stats = {"d_real": real_score.mean().item(), "d_fake": fake_score.mean().item()}
        return ObjectiveOutput(self.weight * g_loss, stats, {"discriminator": d_loss})


def guide_samples(cfg, guide, prompts: List[str], samples_file: Path) -> Tuple[torch.Tensor, torch.Tensor]:
    """amortize.gan.views guide samples per prompt [P, V, 3, r, r] in [-1, 1], and their views [P, V, 3]: drawn once,
    then read from ``samples_file`` (a resumed run draws none)."""
    gan, count = cfg.amortize.gan, cfg.amortize.gan.views * len(prompts)
    if samples_file.is_file():
        saved = torch.load(samples_file, map_location="cpu", weights_only=True)
        if saved["prompts"] == list(prompts) and saved["images"].shape[1] == gan.views:
            return saved["images"], saved["views"]
    cameras = seeded_cameras(cfg, count, cfg.seed)
    labels = view_labels(cameras.elevation, cameras.azimuth, cfg.prompt.front_threshold, cfg.prompt.back_threshold,
                         cfg.prompt.overhead_threshold)
    texts = [prompt for prompt in prompts for _ in range(gan.views)]
    captions = [view_prompt(text, label) if cfg.prompt.view_dependent else text for text, label in zip(texts, labels)]
    images = []
    for start in tqdm(range(0, count, SAMPLE_BATCH), desc="guide samples", unit="batch", dynamic_ncols=True):
        rows = slice(start, start + SAMPLE_BATCH)
        rgb = sample_images(guide, captions[rows], gan.sample_steps, cfg.objective.guidance_scale, cfg.seed + start,
                            cameras.select(rows).to(guide.device))
        images.append(guide.encode(rgb.to(guide.device)).cpu())
    images = torch.cat(images).unflatten(0, (len(prompts), gan.views))
    views = view_features(cameras).unflatten(0, (len(prompts), gan.views))
    with atomic_write(samples_file) as tmp:
        torch.save({"prompts": list(prompts), "images": images, "views": views}, tmp)
    return images, views


def seeded_cameras(cfg, count: int, seed: int) -> Cameras:
    """``count`` training cameras drawn from their own seed, leaving the run's random stream untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return sample_cameras(cfg.cameras, cfg.render.width, cfg.render.height, batch_size=count)
