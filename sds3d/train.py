"""The per-prompt optimisation loop: build, step, validate, checkpoint, resume, export."""

import json
import logging
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from sds3d.cameras import sample_cameras
from sds3d.checkpoint import load_checkpoint, save_checkpoint
from sds3d.config import save_config, schedule
from sds3d.errors import NonFiniteError
from sds3d.guides.prompts import PromptSet
from sds3d.guides import load_guide
from sds3d.objectives import build_objective
from sds3d.render.background import Background
from sds3d.render.shading import pick_shading
from sds3d.render.volume import VolumeRenderer
from sds3d.scene.nerf import NeRFField
from sds3d.views import export_meshes, save_turntable, save_validation

log = logging.getLogger("sds3d")


@dataclass
class RunResult:
    run_dir: Path
    steps: int  # completed optimisation steps
    seconds_per_step: float  # of this invocation's steps (0 when none ran)
    outputs: List[Path] = field(default_factory=list)  # meshes and video written
    interrupted: bool = False


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_scene(cfg) -> nn.ModuleDict:
    return nn.ModuleDict({"field": NeRFField(cfg.scene), "background": Background(cfg.render.background)})


def build_optimizer(scene: nn.ModuleDict, objective: nn.Module, cfg) -> torch.optim.Optimizer:
    groups = [
        {"params": scene["field"].encoding.parameters(), "lr": cfg.train.lr_encoding},
        {"params": scene["field"].network.parameters(), "lr": cfg.train.lr_network},
        {"params": scene["background"].parameters(), "lr": cfg.train.lr_background},
        {"params": objective.parameters(), "lr": objective.lr},
    ]
    groups = [g | {"params": list(g["params"])} for g in groups]
    return torch.optim.Adam([g for g in groups if g["params"]], betas=tuple(cfg.train.betas), eps=cfg.train.eps)


def regularisers(out, step: int, cfg) -> Dict[str, torch.Tensor]:
    """DreamFusion's orientation loss, threestudio's sparsity and opaque (opacity entropy) terms, weighted."""
    terms = {}
    weights = {k: schedule(getattr(cfg.train, f"lambda_{k}"), step) for k in ("orient", "sparsity", "opaque")}
    if weights["orient"] > 0 and out.orient is not None:
        terms["orient"] = weights["orient"] * out.orient.mean()
    if weights["sparsity"] > 0:
        terms["sparsity"] = weights["sparsity"] * (out.opacity**2 + 0.01).sqrt().mean()
    if weights["opaque"] > 0:
        opacity = out.opacity.clamp(1e-3, 1.0 - 1e-3)
        terms["opaque"] = weights["opaque"] * F.binary_cross_entropy(opacity, opacity)
    return terms


def memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train(cfg, run_dir: Path, resume: bool = False) -> RunResult:
    device = pick_device(cfg.device)
    guide = load_guide(cfg.guide, device)
    prompts = PromptSet(guide, cfg.prompt)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    torch.manual_seed(cfg.seed)
    scene = build_scene(cfg).to(device)
    objective = build_objective(cfg.objective, guide, cfg.train.steps).to(device)
    optimizer = build_optimizer(scene, objective, cfg)
    use_amp = cfg.train.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    ckpt_path = run_dir / "ckpt" / "last.pt"
    start = load_checkpoint(ckpt_path, scene, optimizer, objective, scaler) if resume else 0
    renderer = VolumeRenderer(cfg.render, cfg.scene.radius)
    field_, background = scene["field"], scene["background"]
    metrics = (run_dir / "metrics.jsonl").open("a")
    step, began, interrupted = start, time.perf_counter(), False
    bar = tqdm(total=cfg.train.steps, initial=start, desc="sds3d", unit="step", dynamic_ncols=True)
    try:
        for step in range(start, cfg.train.steps):
            field_.update_step(step)
            cameras = sample_cameras(cfg.cameras, cfg.render.width, cfg.render.height).to(device)
            shading = pick_shading(step, cfg.render)
            random_bg = torch.rand(()).item() < cfg.render.background.random_color_prob
            bg_color = torch.rand(len(cameras), 3) if random_bg else None
            out = renderer.render(field_, background, cameras, shading, schedule(cfg.train.lambda_orient, step) > 0, bg_color)
            x = guide.encode(out.rgb.permute(0, 3, 1, 2))
            result = objective(guide, x, prompts.conditions(cameras), step)
            losses = {"objective": schedule(cfg.objective.weight, step) * result.loss, **result.aux, **regularisers(out, step, cfg)}
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise NonFiniteError(f"loss is {loss.item()} at step {step}", hint=f"the last good checkpoint is kept in {ckpt_path}")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            grad_norm = nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], float("inf"))
            if not torch.isfinite(grad_norm) and not use_amp:
                raise NonFiniteError(f"gradient norm is {grad_norm.item()} at step {step}", hint=f"the last good checkpoint is kept in {ckpt_path}")
            scaler.step(optimizer)
            scaler.update()
            done = step + 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4g}", t=f"{result.stats.get('t', 0):.0f}")
            if done % cfg.train.log_every == 0 or done == cfg.train.steps:
                record = {"step": done, "loss": loss.item(), **{f"loss/{k}": v.item() for k, v in losses.items()},
                          **{f"objective/{k}": v for k, v in result.stats.items()}, "grad_norm": grad_norm.item(),
                          "shading": shading, "steps_per_s": (done - start) / (time.perf_counter() - began),
                          "memory_mb": memory_mb(device)}
                metrics.write(json.dumps(record) + "\n")
                metrics.flush()
            if cfg.train.ckpt_every and done % cfg.train.ckpt_every == 0:
                save_checkpoint(ckpt_path, done, scene, optimizer, objective, scaler)
            if cfg.train.val_every and done % cfg.train.val_every == 0:
                save_validation(renderer, scene, cfg, run_dir, done)
            step = done
    except KeyboardInterrupt:
        interrupted = True
        log.warning("interrupted at step %d: saving a checkpoint and exporting what there is", step)
    finally:
        bar.close()
        metrics.close()
    elapsed = time.perf_counter() - began
    save_checkpoint(ckpt_path, step, scene, optimizer, objective, scaler)
    save_validation(renderer, scene, cfg, run_dir, step)
    outputs = export_meshes(scene, cfg, run_dir, cfg.export.formats, cfg.export.resolution)
    if cfg.export.video_frames > 0:
        outputs.append(save_turntable(renderer, scene, cfg, run_dir / "video.mp4"))
    return RunResult(run_dir, step, elapsed / max(step - start, 1) if step > start else 0.0, outputs, interrupted)
