"""The one entry the CLI and Python users share: generate an asset, resume a run, re-export a run."""

import re
import time
from pathlib import Path
from typing import List, Optional, Sequence


from sds3d.checkpoint import load_checkpoint
from sds3d.config import load_config, load_saved_config
from sds3d.errors import ConfigError
from sds3d.objectives import OBJECTIVES
from sds3d.train import RunResult, build_scene, pick_device, train
from sds3d.views import export_meshes


def slugify(prompt: str, max_length: int = 48) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")
    return slug[:max_length].rstrip("-") or "run"


def new_run_dir(cfg, prefix: str = "") -> Path:
    """``<out_dir>/<prefix><prompt-slug>-<yyyymmdd-hhmmss>``."""
    return Path(cfg.out_dir).expanduser() / f"{prefix}{slugify(cfg.prompt.text)}-{time.strftime('%Y%m%d-%H%M%S')}"


def generate(prompt: Optional[str] = None, config: Optional[str] = None, overrides: Sequence[str] = (),
             run_dir: Optional[Path] = None) -> RunResult:
    """Prompt (and/or config file, ``key=value`` overrides) -> a finished run folder with mesh.glb."""
    cfg = load_config(config, overrides, prompt, objective_names=list(OBJECTIVES))
    return train(cfg, Path(run_dir) if run_dir else new_run_dir(cfg))


def resume(run_dir: Path, overrides: Sequence[str] = ()) -> RunResult:
    """Continue a run from ``ckpt/last.pt`` with its saved config (overrides such as train.steps allowed)."""
    run_dir = Path(run_dir)
    cfg = load_saved_config(run_dir / "config.yaml", overrides, objective_names=list(OBJECTIVES))
    if not (run_dir / "ckpt" / "last.pt").is_file():
        raise ConfigError(f"'{run_dir}' has no checkpoint to resume from", hint="start it again with `sds3d run`")
    return train(cfg, run_dir, resume=True)


def export(run_dir: Path, formats: Sequence[str] = ("glb",), resolution: Optional[int] = None,
           overrides: Sequence[str] = ()) -> List[Path]:
    """Re-extract meshes from a run's checkpoint (e.g. at a higher marching-cubes resolution)."""
    cfg, scene = load_run(run_dir, [*overrides, f"export.formats={list(formats)}"])
    return export_meshes(scene, cfg, Path(run_dir), cfg.export.formats, resolution or cfg.export.resolution)


def load_run(run_dir: Path, overrides: Sequence[str] = ()):
    """A finished (or interrupted) run's config and scene, with the checkpoint's weights, on its device."""
    run_dir = Path(run_dir)
    cfg = load_saved_config(run_dir / "config.yaml", overrides, objective_names=list(OBJECTIVES))
    scene = build_scene(cfg)
    load_checkpoint(run_dir / "ckpt" / "last.pt", scene, restore_rng=False)
    return cfg, scene.to(pick_device(cfg.device))
