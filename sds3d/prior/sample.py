"""Sampling a pixel-space guide with DDIM and classifier-free guidance, and scoring the samples
against the world's ground truth: the check that the prior draws what its captions say."""

import json
import random
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from diffusers import DDIMScheduler

from sds3d.cameras import Cameras, sample_cameras
from sds3d.export import write_image
from sds3d.objectives.base import classifier_free_guidance
from sds3d.world.metrics import score_sample
from sds3d.world.scenes import HELD_OUT, RELATIONS, pair, sample_scene, single, training_pairs


def evaluation_captions(pair_count: int = 25) -> Dict[str, List[str]]:
    """Fixed caption sets: every training single, every held-out single, and ``pair_count`` distinct pairs of
    training singles (the first five as the first priors were scored on, then drawn with a fixed seed)."""
    singles = [single(s, c).caption for c, s in training_pairs()]
    pool = training_pairs()
    pairs = [pair(pool[i], RELATIONS[i % 2], pool[(i * 7 + 3) % len(pool)]).caption for i in range(0, len(pool), 5)]
    rng = random.Random(0)
    while len(pairs) < pair_count:
        caption = sample_scene(rng, pair_prob=1.0).caption
        if caption not in pairs:
            pairs.append(caption)
    return {"singles": singles, "held-out": [single(s, c).caption for c, s in HELD_OUT], "pairs": pairs[:pair_count]}


@torch.no_grad()
def sample_images(guide, captions: Sequence[str], steps: int = 50, guidance_scale: float = 7.5, seed: int = 0,
                  cameras: Optional[Cameras] = None) -> torch.Tensor:
    """DDIM samples [N, 3, r, r] in [0, 1], one per caption, with standard CFG against the empty prompt;
    a camera-conditioned guide (``view_aware``) draws caption n as seen by camera n of ``cameras``."""
    alphas = guide.alphas_cumprod.double().cpu()
    betas = 1.0 - alphas / torch.cat([torch.ones(1, dtype=alphas.dtype), alphas[:-1]])  # the guide's own schedule
    scheduler = DDIMScheduler(num_train_timesteps=len(alphas), trained_betas=betas.numpy(), clip_sample=False, set_alpha_to_one=False)
    scheduler.set_timesteps(steps)
    embeddings = guide.embed(list(captions) + [""])
    cond, null = embeddings[:-1], embeddings[-1:].expand(len(captions), -1, -1)
    views = {"cameras": cameras} if getattr(guide, "view_aware", False) else {}
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(len(captions), 3, guide.resolution, guide.resolution, generator=generator).to(guide.device)
    for t in scheduler.timesteps:
        t_batch = torch.full((len(captions),), int(t), device=guide.device, dtype=torch.long)
        eps_cond, eps_null = guide.predict_noise(x, t_batch, torch.stack([cond, null]), **views)
        x = scheduler.step(classifier_free_guidance(eps_null, eps_cond, guidance_scale), int(t), x).prev_sample
    return ((x.cpu() + 1.0) / 2.0).clamp(0.0, 1.0)


def score_prior(guide, cameras_cfg, out: Path, steps: int = 50, guidance_scale: float = 7.5, seed: int = 0) -> Dict[str, float]:
    """Samples every evaluation caption (from training cameras drawn with ``seed``, for a camera-conditioned
    guide), writes them as one grid (a row per set) at ``out`` and each caption's checker scores as JSON beside it
    (``out`` with the suffix .json), returns pass rates, mean IoU and colour error per set (and a camera-conditioned
    guide's mean ``own_iou``, ``score_sample``)."""
    rows, scores, samples = [], {}, []
    view_aware = getattr(guide, "view_aware", False)
    for name, captions in evaluation_captions().items():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            cameras = sample_cameras(cameras_cfg, guide.resolution, guide.resolution, batch_size=len(captions))
        images = sample_images(guide, captions, steps, guidance_scale, seed, cameras)
        own = [cameras.select(slice(i, i + 1)) if view_aware else None for i in range(len(captions))]
        results = [score_sample(img.permute(1, 2, 0), cap, cameras_cfg, camera=cam) for img, cap, cam in zip(images, captions, own)]
        samples += [{"set": name, "caption": cap, **result} for cap, result in zip(captions, results)]
        scores[name] = float(np.mean([r["passed"] for r in results]))
        scores[f"{name}/iou"] = float(np.mean([r["iou"] for r in results]))
        scores[f"{name}/colour_error"] = float(np.mean([r["colour_error"] for r in results]))
        if view_aware:
            scores[f"{name}/own_iou"] = float(np.mean([r["own_iou"] for r in results]))
        rows.append(torch.cat(list(images.permute(0, 2, 3, 1)), dim=1))
    width = max(r.shape[1] for r in rows)
    grid = torch.cat([torch.nn.functional.pad(r, (0, 0, 0, width - r.shape[1]), value=1.0) for r in rows])
    write_image(grid.numpy(), out)
    Path(out).with_suffix(".json").write_text(json.dumps({"scores": scores, "samples": samples}, indent=1))
    return scores

