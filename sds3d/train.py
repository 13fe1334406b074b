"""The per-prompt optimisation loop: build, step, validate, checkpoint, resume, export."""

import contextlib
import json
import logging
import resource
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from omegaconf import DictConfig, ListConfig, OmegaConf
from tqdm import tqdm

from sds3d.cameras import sample_cameras
from sds3d.atomic import atomic_write, remove_stale_temporaries
from sds3d.checkpoint import load_checkpoint, run_identity, save_checkpoint
from sds3d.config import save_config, schedule
from sds3d.device import pick_device
from sds3d.errors import ConfigError, NonFiniteError
from sds3d.guides.prompts import PromptSet
from sds3d.guides import load_guide
from sds3d.layout import load_layout
from sds3d.layout.zoom import IsolatedField, zoomed_cameras
from sds3d.objectives import build_objective
from sds3d.render.background import Background
from sds3d.render.colour_gate import colour_passes, gate_colour
from sds3d.render.latent import LatentHead
from sds3d.render.shading import pick_shading
from sds3d.render.volume import VolumeRenderer
from sds3d.scene.nerf import ConstantCode, NeRFField
from sds3d.timing import PartTimer
from sds3d.views import export_meshes, save_validation

log = logging.getLogger("sds3d")


@dataclass
class RunResult:
    run_dir: Path
    steps: int  # completed optimisation steps
    seconds_per_step: float  # of this invocation's steps (0 when none ran)
    outputs: List[Path] = field(default_factory=list)  # meshes and video written
    interrupted: bool = False
    seconds: Dict[str, float] = field(default_factory=dict)  # wall time by phase: setup, steps, validation, mesh, video


def build_scene(cfg, layout=None) -> nn.ModuleDict:
    """With a ``layout``, the field carries its region codes (for the semantic map). With scene.particles > 1,
    the other particles (each its own field and background) sit in ``scene["particles"]``."""
    scene = particle_scene(cfg, layout)
    if cfg.scene.particles > 1:
        scene["particles"] = nn.ModuleList([particle_scene(cfg, layout) for _ in range(cfg.scene.particles - 1)])
    if cfg.render.latent_warmup_steps > 0:
        scene["latent_head"] = LatentHead()
    return scene


def separate_objects_layout(cfg):
    """The layout that a saved run of separate objects (``layout.separate_objects``) needs to rebuild its field, whose
    network reads the region codes; None for any other run."""
    return load_layout(cfg.layout.file, cfg.scene.radius) if cfg.layout.file and cfg.layout.separate_objects else None


def generated_code(cfg) -> Optional[ConstantCode]:
    """The prompt code input of a run made by `sds3d generate` (its values come with the weights); None for others."""
    return ConstantCode(cfg.amortize.code_dim) if cfg.amortize.generator else None


def particle_scene(cfg, layout=None) -> nn.ModuleDict:
    support = layout.holds if layout is not None and cfg.layout.separate_objects else None
    field_ = NeRFField(cfg.scene, layout.region_codes if layout is not None else None, support, generated_code(cfg))
    return nn.ModuleDict({"field": field_, "background": Background(cfg.render.background)})


def particles(scene: nn.ModuleDict) -> List[nn.ModuleDict]:
    """Every particle of ``scene`` as {"field", "background"}: the scene itself first, then the others."""
    return [scene, *(scene["particles"] if "particles" in scene else [])]


def scheduled_group(params, lr) -> dict:
    """An Adam group whose learning rate follows the schedulable ``lr`` (``set_learning_rates`` moves it)."""
    lr = OmegaConf.to_object(lr) if isinstance(lr, ListConfig) else lr
    return {"params": params, "lr": schedule(lr, 0, 1), "lr_schedule": lr}


def set_learning_rates(optimizer: torch.optim.Optimizer, step: int, total_steps: int) -> None:
    for group in optimizer.param_groups:
        if "lr_schedule" in group:
            group["lr"] = schedule(group["lr_schedule"], step, total_steps)


def build_optimizer(scene_groups: List[dict], objective: nn.Module, train_cfg) -> torch.optim.Optimizer:
    """Adam over the stage's groups and the objective's own parameters (VSD's LoRA), with ``train``'s betas and eps."""
    groups = [*scene_groups, {"params": objective.parameters(), "lr": objective.lr}]
    groups = [g | {"params": list(g["params"])} for g in groups]
    return torch.optim.Adam([g for g in groups if g["params"]], betas=tuple(train_cfg.betas), eps=train_cfg.eps)


def regularisers(out, step: int, train_cfg) -> Dict[str, torch.Tensor]:
    """DreamFusion's orientation loss, threestudio's sparsity and opaque (opacity entropy) terms, and a haze
    term (a concave opacity penalty, steepest where the opacity is faint), weighted."""
    terms = {}
    names = ("orient", "sparsity", "opaque", "haze")
    weights = {k: schedule(getattr(train_cfg, f"lambda_{k}"), step, train_cfg.steps) for k in names}
    if weights["orient"] > 0 and out.orient is not None:
        terms["orient"] = weights["orient"] * out.orient.mean()
    if weights["sparsity"] > 0:
        terms["sparsity"] = weights["sparsity"] * (out.opacity**2 + 0.01).sqrt().mean()
    if weights["opaque"] > 0:
        opacity = out.opacity.clamp(1e-3, 1.0 - 1e-3)
        terms["opaque"] = weights["opaque"] * F.binary_cross_entropy(opacity, opacity)
    if weights["haze"] > 0:
        terms["haze"] = weights["haze"] * (out.opacity + 0.01).sqrt().mean()
    return terms


@dataclass
class Stage:
    """What a stage optimises and how it renders, regularises and exports; the loop below serves every
    stage (``nerf_stage`` here, the mesh stage in ``sds3d.refine``)."""

    scene: nn.ModuleDict  # {"field": the field or surface the renderer draws, "background": Background}
    renderer: object  # render(field, background, cameras, shading, with_normals, background_color) -> RenderOutput
    param_groups: List[dict]  # Adam groups of the scene's parameters
    regularisers: Callable  # (out: RenderOutput, step) -> {name: weighted loss}
    export: Callable  # (run_dir, timer) -> the paths written: meshes, and video.mp4 when export.video_frames > 0,
    #                   each timed by the ``PartTimer`` as "mesh" and "video"
    isolate: Optional[Callable] = None  # (field, Box) -> the field with nothing outside the box, for zoomed object
    #                                     views (layout.zoom_prob); None: the stage has none
    prompts: Optional[object] = None  # what hands out each step's Conditions (``conditions(cameras, semantic)``);
    #                                   None: the PromptSet of cfg.prompt
    validate: Optional[Callable] = None  # (run_dir, step) -> the validation image written; None: ``save_validation``
    objective: Optional[nn.Module] = None  # what turns a render into the scene's loss; None: cfg.objective's


def nerf_stage(cfg, layout=None) -> Stage:
    scene = build_scene(cfg, layout)
    views = particles(scene)
    groups = [
        scheduled_group([p for v in views for p in v["field"].encoding.parameters()], cfg.train.lr_encoding),
        scheduled_group([p for v in views for p in v["field"].network.parameters()], cfg.train.lr_network),
        {"params": [p for v in views for p in v["background"].parameters()], "lr": cfg.train.lr_background},
        scheduled_group(scene["latent_head"].parameters() if "latent_head" in scene else [], cfg.train.lr_network),
    ]
    renderer = VolumeRenderer(cfg.render, cfg.scene.radius, cfg.render.occupancy_grid)
    return Stage(scene, renderer, groups, lambda out, step: regularisers(out, step, cfg.train),
                 lambda run_dir, timer: export_particles(scene, cfg, run_dir, timer), IsolatedField)


def export_particles(scene: nn.ModuleDict, cfg, run_dir: Path, timer: PartTimer) -> List[Path]:
    """Particle 0's meshes and turntable in ``run_dir``, particle i's meshes in ``run_dir/particle-<i>``."""
    outputs = []
    for i, view in enumerate(particles(scene)):
        out_dir = run_dir / f"particle-{i}" if i else run_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        outputs += export_meshes(view, cfg, out_dir, video=not i and cfg.export.video_frames > 0, timer=timer)
    return outputs


def memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class Session:
    """Everything one optimisation step touches, built once per run by ``build_session``."""

    cfg: DictConfig
    device: torch.device
    guide: object
    prompts: PromptSet
    scene: nn.ModuleDict
    objective: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    renderer: object
    regularisers: Callable
    export: Callable
    isolate: Optional[Callable]
    validate: Callable  # (run_dir, step) -> the validation image written


@dataclass
class StepOutput:
    loss: torch.Tensor
    losses: Dict[str, torch.Tensor]  # the weighted terms that sum to ``loss``
    stats: Dict[str, float]  # the objective's
    grad_norm: torch.Tensor
    shading: str


STOP_HINT = "the run stops here; its last good checkpoint is kept in <run folder>/ckpt/last.pt"


def untimed(part: str):
    return nullcontext()


def build_session(cfg, guide=None, build_stage: Callable[..., Stage] = nerf_stage) -> Session:
    """The guide (loaded from ``cfg.guide`` unless given), prompts, seeded stage (``build_stage(cfg, layout)``),
    objective and optimiser."""
    device = pick_device(cfg.device)
    layout = load_layout(cfg.layout.file, cfg.scene.radius) if cfg.layout.file else None
    if cfg.objective.name == "semantic" and layout is None:
        raise ConfigError("objective 'semantic' needs a layout",
                          hint="sds3d run --layout assets/layouts/cube-left-of-sphere.yaml (or layout.file=..., or layout.planner.url=...)")
    guide = guide if guide is not None else load_guide(cfg.guide, device)
    if cfg.render.latent_warmup_steps > 0 and not guide.latent:
        raise ConfigError(f"render.latent_warmup_steps renders latents, but the guide '{cfg.guide.model}' works on pixels",
                          hint="render.latent_warmup_steps=0, or a latent model (Stable Diffusion) as guide.model")
    torch.manual_seed(cfg.seed)
    stage = build_stage(cfg, layout)
    prompts = stage.prompts or PromptSet(guide, cfg.prompt, layout, cfg.layout.object_views)
    scene = stage.scene.to(device)
    objective = (stage.objective or build_objective(cfg.objective, guide, cfg.train.steps)).to(device)
    optimizer = build_optimizer(stage.param_groups, objective, cfg.train)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.train.amp and device.type == "cuda")
    validate = stage.validate or (lambda run_dir, step: save_validation(stage.renderer, scene, cfg.cameras, cfg.train, run_dir, step))
    return Session(cfg, device, guide, prompts, scene, objective, optimizer, scaler, stage.renderer, stage.regularisers, stage.export,
                   stage.isolate, validate)


def pick_zoomed_region(s: Session, step: int) -> Optional[int]:
    """The layout region (an object, or a part) a zoomed view shows this step (``layout.zoom_prob``), or None for
    a view of the scene. Draws no random number where zoom is off, so those runs keep their random stream."""
    layout, prob = s.prompts.layout, schedule(s.cfg.layout.zoom_prob, step, s.cfg.train.steps)
    if layout is None or s.isolate is None or prob <= 0 or torch.rand(()).item() >= prob:
        return None
    return int(torch.randint(len(layout.regions), ()))


def step_seed(seed: int, step: int) -> int:
    """The seed of step ``step``'s random draws when they are keyed by the step (``train.picard.window`` > 0), so a
    step recomputed from another guess of the parameters draws the same camera, t, noise and background."""
    return (seed * 1_000_003 + step) % 2**63


def train_step(s: Session, step: int, timer=untimed) -> StepOutput:
    """One step: cameras -> render -> guide input -> objective -> backward -> optimiser.

    ``timer(part)`` is a context manager around each part ("render", "encode", "objective",
    "backward", "optimiser"); `sds3d bench speed` passes one that times them.
    """
    out = step_gradients(s, step, timer)
    out.grad_norm = apply_gradients(s, step, timer)
    return out


def begin_step(s: Session, step: int) -> List[nn.ModuleDict]:
    """What a step does before it draws anything: seeds its draws when they are keyed by the step, moves each
    particle's field to ``step`` (coarse-to-fine levels, occupancy grid). Returns the particles."""
    if s.cfg.train.picard.window > 0:
        torch.manual_seed(step_seed(s.cfg.seed, step))
    views = particles(s.scene)
    for view in views:
        view["field"].update_step(step)
    return views


def step_gradients(s: Session, step: int, timer=untimed) -> StepOutput:
    """A step up to its gradients (left in the parameters' ``.grad``); ``grad_norm`` is filled by ``apply_gradients``."""
    cfg, views = s.cfg, begin_step(s, step)
    # One particle draws no random number, so single-particle runs keep their random stream.
    view = views[int(torch.randint(len(views), ()))] if len(views) > 1 else views[0]
    with timer("render"):
        cameras = sample_cameras(cfg.cameras, cfg.render.width, cfg.render.height).to(s.device)
        field, zoomed = view["field"], pick_zoomed_region(s, step)
        if zoomed is not None:
            box = s.prompts.layout.regions[zoomed].box
            cameras, field = zoomed_cameras(cameras, box, cfg.layout.zoom_frame), s.isolate(field, box)
        shading = pick_shading(step, cfg.render)
        random_bg = torch.rand(()).item() < cfg.render.background.random_color_prob
        bg_color = torch.rand(len(cameras), 3) if random_bg else None
        gated = cfg.objective.colour_t_max < 1.0
        orient = schedule(cfg.train.lambda_orient, step, cfg.train.steps) > 0
        out = s.renderer.render(field, view["background"], cameras, shading, orient, bg_color, shape_only=gated)
    with timer("encode"):
        rgb, colour_gate = gate_colour(out.rgb, out.rgb_shape_only) if gated else (out.rgb, None)
        rgb = rgb.permute(0, 3, 1, 2)
        if step < cfg.render.latent_warmup_steps:
            x = s.scene["latent_head"](rgb, s.guide.latent_resolution)
        else:
            x = s.guide.encode(rgb)
    with timer("objective"):
        conditions = s.prompts.conditions(cameras, out.semantic) if zoomed is None else s.prompts.region_conditions(cameras, zoomed)
        result = s.objective(s.guide, x, conditions, step)
        if colour_gate is not None:
            colour_gate.copy_(colour_passes(result.t, cfg.objective.colour_t_max, s.guide.alphas_cumprod.shape[0]))
        weight = schedule(cfg.objective.weight, step, cfg.train.steps)
        losses = {"objective": weight * result.loss, **result.aux, **s.regularisers(out, step)}
        loss = sum(losses.values())
    if not torch.isfinite(loss):
        raise NonFiniteError(f"loss is {loss.item()} at step {step}", hint=STOP_HINT)
    with timer("backward"):
        s.optimizer.zero_grad(set_to_none=True)
        s.scaler.scale(loss).backward()
    return StepOutput(loss, losses, result.stats, torch.tensor(float("nan")), shading)


def apply_gradients(s: Session, step: int, timer=untimed) -> torch.Tensor:
    """The optimiser's step with the gradients in ``.grad`` (learning-rate schedule, AMP scaler); the gradient norm."""
    cfg = s.cfg
    with timer("optimiser"):
        set_learning_rates(s.optimizer, step, cfg.train.steps)
        s.scaler.unscale_(s.optimizer)
        grad_norm = nn.utils.clip_grad_norm_([p for g in s.optimizer.param_groups for p in g["params"]], float("inf"))
        if not torch.isfinite(grad_norm) and not s.scaler.is_enabled():
            raise NonFiniteError(f"gradient norm is {grad_norm.item()} at step {step}", hint=STOP_HINT)
        s.scaler.step(s.optimizer)
        s.scaler.update()
    return grad_norm


def sequential_windows(s: Session, start: int, should_stop: Callable[[], bool]):
    """The ordinary loop in the shape of ``sds3d.picard.picard_windows``: one step per window."""
    for step in range(start, s.cfg.train.steps):
        if should_stop():
            raise KeyboardInterrupt
        yield [(step, train_step(s, step))]


def crossed(before: int, after: int, every: int) -> bool:
    """Whether a multiple of ``every`` (0: never) lies in (before, after]."""
    return every > 0 and after // every > before // every


def keep_metrics_up_to(path: Path, step: int) -> None:
    """Drops the metrics lines past the checkpoint's ``step`` (a killed run logged steps the resume redoes)
    and a half-written last line."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    with atomic_write(path) as tmp:
        tmp.write_text("".join(f"{line}\n" for line in kept))


def train(cfg, run_dir: Path, resume: bool = False, should_stop: Optional[Callable[[], bool]] = None,
          build_stage: Callable[..., Stage] = nerf_stage, guide=None) -> RunResult:
    """``should_stop`` is asked before each step; True ends the run like Ctrl-C (checkpoint, then export).
    ``build_stage(cfg, layout)`` picks the stage: the NeRF by default; ``guide`` a loaded guide (else cfg.guide's)."""
    timer = PartTimer(pick_device(cfg.device))
    with timer("setup"):
        s = build_session(cfg, guide, build_stage)
        ckpt_path, identity = run_dir / "ckpt" / "last.pt", run_identity(cfg)
        # A resume writes nothing until its checkpoint has loaded: a failed one leaves the folder as it was.
        start = load_checkpoint(ckpt_path, s.scene, s.optimizer, s.objective, s.scaler, identity=identity) if resume else 0
        run_dir.mkdir(parents=True, exist_ok=True)
        if remove_stale_temporaries(run_dir):
            log.info("removed temporaries a killed run left in %s", run_dir)
        if resume:
            keep_metrics_up_to(run_dir / "metrics.jsonl", start)
        save_config(cfg, run_dir / "config.yaml")
    scene = s.scene
    metrics = (run_dir / "metrics.jsonl").open("a")
    step, began, interrupted = start, time.perf_counter(), False
    bar = tqdm(total=cfg.train.steps, initial=start, desc="sds3d", unit="step", dynamic_ncols=True)
    asked = should_stop or (lambda: False)
    windows = sequential_windows(s, start, asked)
    if cfg.train.picard.window > 1:
        if build_stage is nerf_stage:
            from sds3d.picard import picard_windows  # sds3d.picard builds on this module

            windows = picard_windows(s, start, asked)
        else:
            log.info("train.picard parallelises the NeRF stage only: this stage runs step by step")
    try:
        for kept in windows:
            for index, out in kept:
                done = index + 1
                bar.update(1)
                bar.set_postfix(loss=f"{out.loss.item():.4g}", t=f"{out.stats.get('t', 0):.0f}")
                if done % cfg.train.log_every == 0 or done == cfg.train.steps:
                    record = {"step": done, "loss": out.loss.item(), **{f"loss/{k}": v.item() for k, v in out.losses.items()},
                              **{f"objective/{k}": v for k, v in out.stats.items()}, "grad_norm": out.grad_norm.item(),
                              "shading": out.shading, "steps_per_s": (done - start) / (time.perf_counter() - began),
                              "memory_mb": memory_mb(s.device)}
                    metrics.write(json.dumps(record) + "\n")
                    metrics.flush()
            # The state is the last kept step's only now: checkpoints and validations wait for the window's end.
            before, step = step, kept[-1][0] + 1
            last = step == cfg.train.steps  # the last step's checkpoint and validation are written after the loop
            if crossed(before, step, cfg.train.ckpt_every) and not last:
                save_checkpoint(ckpt_path, step, scene, s.optimizer, s.objective, s.scaler, identity)
            if crossed(before, step, cfg.train.val_every) and not last:
                with timer("validation"):
                    s.validate(run_dir, step)
    except (KeyboardInterrupt, BrokenPipeError):  # Ctrl-C, SIGTERM (the CLI makes it one) or a closed pipe
        interrupted = True
        log.warning("interrupted at step %d: saving a checkpoint and exporting what there is", step)
    finally:
        with contextlib.suppress(OSError):  # the bar writes to stderr, which may be a pipe closed by now
            bar.close()
        metrics.close()
    elapsed = time.perf_counter() - began
    timer.seconds["steps"] = elapsed - timer.seconds["validation"]
    save_checkpoint(ckpt_path, step, scene, s.optimizer, s.objective, s.scaler, identity)
    with timer("validation"):
        s.validate(run_dir, step)
    outputs = s.export(run_dir, timer)
    return RunResult(run_dir, step, elapsed / max(step - start, 1) if step > start else 0.0, outputs, interrupted, dict(timer.seconds))
