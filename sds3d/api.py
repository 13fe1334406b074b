"""The one entry the CLI and Python users share: generate an asset, resume, refine or re-export a run."""

import itertools
import json
import re
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence


from sds3d.amortize.generate import generate_asset, load_generator
from sds3d.amortize.train import train_generator
from sds3d.atomic import atomic_write
from sds3d.checkpoint import load_checkpoint
from sds3d.config import ASSETS_DIR, load_config, load_refine_config, load_saved_config
from sds3d.device import pick_device
from sds3d.errors import ConfigError
from sds3d.guides.base import check_prompt_words
from sds3d.layout import load_layout, plan_layout
from sds3d.refine import REFINE_DIR, refine as refine_stage, resume_refine
from sds3d.timing import PartTimer
from sds3d.train import RunResult, build_scene, separate_objects_layout, train
from sds3d.views import export_meshes

BUNDLED_GENERATOR = ASSETS_DIR / "generator"


def slugify(prompt: str, max_length: int = 48) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")
    return slug[:max_length].rstrip("-") or "run"


def new_run_dir(cfg, prefix: str = "") -> Path:
    """Claims ``<out_dir>/<prefix><prompt-slug>-<yyyymmdd-hhmmss>`` (``-2``, ``-3``, ... when taken): the
    folder is created exclusively, so two runs started in the same second never share one. An out_dir
    that cannot be written is a ConfigError before any model loads."""
    base = Path(cfg.out_dir).expanduser() / f"{prefix}{slugify(cfg.prompt.text)}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        base.parent.mkdir(parents=True, exist_ok=True)
        for n in itertools.count(1):
            path = base if n == 1 else base.with_name(f"{base.name}-{n}")
            try:
                path.mkdir()
                return path
            except FileExistsError:
                continue
    except OSError as exc:
        raise ConfigError(f"cannot create a run folder in out_dir '{cfg.out_dir}': {exc.strerror or exc}",
                          hint="set out_dir=<a folder you can write>") from exc


def generate(prompt: Optional[str] = None, config: Optional[str] = None, overrides: Sequence[str] = (),
             run_dir: Optional[Path] = None, should_stop: Optional[Callable[[], bool]] = None,
             layout: Optional[str] = None) -> RunResult:
    """Prompt (and/or config file, ``key=value`` overrides) -> a finished run folder with mesh.glb, and
    with ``refine.enabled`` the mesh stage's refine/mesh.glb (its outputs join the result's).

    ``should_stop`` (asked once per step, or per window with train.picard) ends the run early the way Ctrl-C does: checkpoint, then export.
    ``layout`` (a layout file) picks the semantic config unless ``config`` is given; its global prompt is
    the prompt unless one is given. With ``layout.planner.url`` and no layout file, the planned layout
    is saved as <run folder>/layout.json and used from there (a resume reuses it).
    """
    if layout is not None:
        config, overrides = config or "semantic", [*overrides, f"layout.file={layout}"]
    cfg = load_config(config, overrides, prompt)
    if cfg.amortize.mode == "gan":
        raise ConfigError("amortize.mode gan trains a generator over a prompt set, not one asset",
                          hint="sds3d amortize PROMPTS_FILE --config amortize-gan, then sds3d generate PROMPT --generator <its folder>")
    # A bad layout or a word the model cannot read fails before a run folder exists.
    if cfg.layout.file:
        load_layout(cfg.layout.file, cfg.scene.radius)
    check_prompt_words(cfg.guide.model, cfg.prompt.text)
    run_dir = Path(run_dir) if run_dir else new_run_dir(cfg)
    if cfg.layout.planner.url and not cfg.layout.file:
        planner = cfg.layout.planner
        planned = plan_layout(cfg.prompt.text, planner.url, planner.model, planner.api_key_env, planner.timeout, cfg.scene.radius)
        path = run_dir / "layout.json"
        with atomic_write(path) as tmp:
            tmp.write_text(json.dumps(planned.to_dict(), indent=2))
        cfg = load_config(config, [*overrides, f"layout.file={path}"], prompt)
    result = train(cfg, run_dir, should_stop=should_stop)
    if cfg.refine.enabled and not result.interrupted:
        result.outputs += refine_stage(*load_run(run_dir), run_dir).outputs
    return result


def generate_with(generator: Path, prompt: str, overrides: Sequence[str] = (), run_dir: Optional[Path] = None) -> RunResult:
    """An asset for ``prompt`` from a trained generator folder (`sds3d amortize`'s run folder, or the bundled one) in
    one forward pass: a run folder like ``generate``'s, with config.yaml, ckpt/last.pt and the meshes. ``overrides``
    apply to the generator's config (export.*, device, out_dir)."""
    timer = PartTimer()
    with timer("setup"):
        values = {"prompt": {"text": prompt}, "amortize": {"generator": str(Path(generator).resolve())}}
        cfg, scene = load_generator(generator, overrides, values)
        check_prompt_words(cfg.guide.model, prompt)
        run_dir = Path(run_dir) if run_dir else new_run_dir(cfg)
    return generate_asset(cfg, scene, run_dir, timer)


def amortize(prompts_file: Optional[Path] = None, config: Optional[str] = "amortize", overrides: Sequence[str] = (),
             run_dir: Optional[Path] = None, resume: bool = False, should_stop: Optional[Callable[[], bool]] = None) -> RunResult:
    """Trains one generator over the prompts of ``prompts_file`` (as `sds3d batch` reads it: a text file or a YAML/JSON
    list; one config for all, so entries carry no config, overrides or seed) into ``run_dir`` (default
    <out_dir>/amortize-<file>-<time>). ``resume`` continues ``run_dir`` from its checkpoint with its saved config."""
    if resume:
        cfg = resumable_config(Path(run_dir), overrides, "start it again with `sds3d amortize PROMPTS_FILE`")
        return train_generator(cfg, Path(run_dir), True, should_stop)
    from sds3d.batch.jobs import portable_config, read_jobs  # sds3d.batch.jobs imports this module

    jobs = read_jobs(Path(prompts_file), config, overrides)
    own = [job for job in jobs if job.config != portable_config(config) or job.overrides != tuple(overrides)]
    if own:
        raise ConfigError(f"'{prompts_file}' entry {own[0].number} ('{own[0].prompt}') has its own config, overrides or seed",
                          hint="an amortized generator trains every prompt under one config: give them on the command line")
    prompts = list(dict.fromkeys(job.prompt for job in jobs))
    cfg = load_config(config, overrides, Path(prompts_file).stem, {"amortize": {"prompts": prompts}})
    run_dir = Path(run_dir) if run_dir else new_run_dir(cfg, prefix="amortize-")
    return train_generator(cfg, run_dir, should_stop=should_stop)


def refine(run_dir: Path, config: Optional[str] = None, overrides: Sequence[str] = (), resume: bool = False) -> RunResult:
    """The mesh stage of a finished run, into run_dir/refine: the ``refine`` section of ``config`` (a YAML
    file or shipped name; None keeps the run's own) and ``overrides`` over the run's config. ``resume`` continues run_dir/refine
    from its checkpoint with its saved config and ``overrides`` (e.g. refine.steps=400 to run longer)."""
    run_dir = Path(run_dir)
    refine_dir = run_dir / REFINE_DIR
    if resume:
        return resume_refine(resumable_config(refine_dir, overrides, f"start it with `sds3d refine {run_dir}`"), refine_dir)
    cfg = load_refine_config(run_dir / "config.yaml", config, overrides)
    return refine_stage(cfg, load_scene(cfg, run_dir), run_dir)


def resume(run_dir: Path, overrides: Sequence[str] = ()) -> RunResult:
    """Continue a run from ``ckpt/last.pt`` with its saved config (overrides such as train.steps allowed)."""
    run_dir = Path(run_dir)
    return train(resumable_config(run_dir, overrides, "start it again with `sds3d run`"), run_dir, resume=True)


def resumable_config(folder: Path, overrides: Sequence[str], restart_hint: str):
    """The saved config of a run folder that has a checkpoint to resume from (else a ConfigError with ``restart_hint``)."""
    cfg = load_saved_config(folder / "config.yaml", overrides)
    if not (folder / "ckpt" / "last.pt").is_file():
        raise ConfigError(f"'{folder}' has no checkpoint to resume from", hint=restart_hint)
    return cfg


def export(run_dir: Path, formats: Sequence[str] = ("glb",), resolution: Optional[int] = None,
           overrides: Sequence[str] = ()) -> List[Path]:
    """Re-extract meshes from a run's checkpoint (e.g. at a higher marching-cubes resolution)."""
    extra = [f"export.formats={list(formats)}"] + ([f"export.resolution={resolution}"] if resolution else [])
    cfg, scene = load_run(run_dir, [*overrides, *extra])
    return export_meshes(scene, cfg, Path(run_dir))


def load_run(run_dir: Path, overrides: Sequence[str] = ()):
    """A finished (or interrupted) run's config and scene, with the checkpoint's weights, on its device."""
    run_dir = Path(run_dir)
    cfg = load_saved_config(run_dir / "config.yaml", overrides)
    return cfg, load_scene(cfg, run_dir)


def load_scene(cfg, run_dir: Path):
    """The NeRF scene of ``cfg`` with the weights of run_dir/ckpt/last.pt, on the config's device."""
    scene = build_scene(cfg, separate_objects_layout(cfg))
    load_checkpoint(Path(run_dir) / "ckpt" / "last.pt", scene, restore_rng=False)
    return scene.to(pick_device(cfg.device))
