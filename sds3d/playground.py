"""The 2D playground: one image (or latent) optimised directly by an objective, the fastest way to see
what an objective does. Same config tree as `sds3d run`; it reads ``image.*`` in place of scene,
render and train, and a single fixed camera gives the view suffix (and VSD's camera condition)."""

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from tqdm import tqdm

from sds3d.api import new_run_dir
from sds3d.cameras import make_cameras
from sds3d.config import load_config, save_config, schedule
from sds3d.device import pick_device
from sds3d.errors import NonFiniteError
from sds3d.export import write_image
from sds3d.guides import load_guide
from sds3d.guides.prompts import PromptSet
from sds3d.objectives import build_objective

MIN_SIDE = 256  # saved images are upscaled (nearest) to at least this many pixels a side


@dataclass
class PlaygroundResult:
    out_dir: Path
    image_path: Path  # the final image
    progress_path: Path  # image.frames snapshots side by side, the last being the final image
    steps: int
    seconds_per_step: float


def fixed_view(cfg, resolution: int):
    """The one camera the prompt describes: azimuth ``image.azimuth`` at the eval elevation, distance and fov."""
    c = cfg.cameras
    values = (c.eval_elevation, cfg.image.azimuth, c.eval_distance, c.eval_fovy)
    return make_cameras(*(torch.tensor([float(v)]) for v in values), resolution, resolution)


def image_parameter(guide, space: str, device) -> Tuple[torch.Tensor, Callable, Callable]:
    """The optimised tensor, and functions of it giving the guide's input x and the rgb [1, 3, R, R] it
    shows. Both spaces start from a grey image: RGB logits 0, or the guide's encoding of grey."""
    grey = torch.full((1, 3, guide.resolution, guide.resolution), 0.5, device=device)
    if space == "image":
        logits = torch.zeros_like(grey, requires_grad=True)
        return logits, lambda: guide.encode(torch.sigmoid(logits)), lambda: torch.sigmoid(logits.detach())
    with torch.no_grad():
        x = guide.encode(grey).clone().requires_grad_(True)
    return x, lambda: x, lambda: guide.decode(x)


def to_picture(rgb: torch.Tensor) -> torch.Tensor:
    """rgb [1, 3, R, R] -> [H, W, 3] on the CPU, upscaled by an integer factor to at least MIN_SIDE."""
    factor = math.ceil(MIN_SIDE / rgb.shape[-1])
    return F.interpolate(rgb.float(), scale_factor=factor, mode="nearest")[0].permute(1, 2, 0).cpu()


def optimise_image(prompt: Optional[str] = None, config: Optional[str] = None, overrides: Sequence[str] = (),
                   out_dir: Optional[Path] = None) -> PlaygroundResult:
    """Optimise one image for ``prompt`` with the configured objective; write image.png, progress.png,
    config.yaml and metrics.jsonl to ``out_dir`` (default ``<out_dir>/image-<slug>-<time>``)."""
    cfg = load_config(config, overrides, prompt)
    device = pick_device(cfg.device)
    guide = load_guide(cfg.guide, device)
    conditions = PromptSet(guide, cfg.prompt).conditions(fixed_view(cfg, guide.resolution).to(device))
    torch.manual_seed(cfg.seed)
    steps = cfg.image.steps
    objective = build_objective(cfg.objective, guide, steps).to(device)
    space = cfg.image.space if cfg.image.space != "auto" else ("latent" if guide.latent else "image")
    param, to_x, to_rgb = image_parameter(guide, space, device)
    groups = [{"params": [param], "lr": cfg.image.lr}, {"params": list(objective.parameters()), "lr": objective.lr}]
    optimizer = torch.optim.Adam([g for g in groups if g["params"]])

    out_dir = Path(out_dir) if out_dir else new_run_dir(cfg, prefix="image-")
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out_dir / "config.yaml")
    snapshot_steps = {math.ceil(steps * (i + 1) / cfg.image.frames) for i in range(cfg.image.frames)}
    frames, began = [], time.perf_counter()
    bar = tqdm(total=steps, desc="sds3d image", unit="step", dynamic_ncols=True)
    with (out_dir / "metrics.jsonl").open("w") as metrics, bar:
        for step in range(steps):
            result = objective(guide, to_x(), conditions, step)
            loss = schedule(cfg.objective.weight, step, steps) * result.loss + sum(result.aux.values())
            if not torch.isfinite(loss):
                raise NonFiniteError(f"loss is {loss.item()} at step {step}", hint="lower image.lr or objective.guidance_scale")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4g}", t=f"{result.stats.get('t', 0):.0f}")
            record = {"step": step + 1, "loss": loss.item(), **{f"loss/{k}": v.item() for k, v in result.aux.items()},
                      **{f"objective/{k}": v for k, v in result.stats.items()}}
            metrics.write(json.dumps(record) + "\n")
            if step + 1 in snapshot_steps:
                with torch.no_grad():
                    frames.append(to_picture(to_rgb()))
    seconds_per_step = (time.perf_counter() - began) / steps
    image_path = write_image(frames[-1].numpy(), out_dir / "image.png")
    progress_path = write_image(torch.cat(frames, dim=1).numpy(), out_dir / "progress.png")
    return PlaygroundResult(out_dir, image_path, progress_path, steps, seconds_per_step)
