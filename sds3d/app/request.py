"""The page's form as a checked run request: the configs to choose from, the knobs' defaults, and
validation through the real config loader and the guide's vocabulary, before anything is queued."""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from omegaconf import DictConfig

from sds3d.config import load_config, shipped_configs
from sds3d.errors import ConfigError, Sds3dError
from sds3d.guides.base import check_prompt_words

# What one page request may ask for: the page is shared, the command line has no such limits.
MAX_PROMPT_CHARS = 300
MAX_STEPS = 20000


@dataclass
class Knobs:
    """The main knobs of a config; ``guidance_scale`` is None where the config schedules it."""

    objective: str
    steps: int
    guidance_scale: Optional[float]
    seed: int


@dataclass
class RunRequest:
    prompt: str
    config: str  # a shipped config's name or a YAML path
    overrides: List[str]
    cfg: DictConfig  # the validated config the run will use


def config_choices(extra: Sequence[Path] = ()) -> List[Tuple[str, str]]:
    """(label, value) pairs: the shipped configs by name, then each YAML in ``extra`` (files or folders) by path."""
    choices = [(name, name) for name in shipped_configs()]
    for entry in map(Path, extra):
        files = sorted(entry.glob("*.yaml")) if entry.is_dir() else [entry]
        choices += [(f"{f.stem} ({f.parent})", str(f.resolve())) for f in files]
    return choices


def knob_defaults(config: str) -> Knobs:
    cfg = load_config(config, prompt="(any prompt)")
    scale = cfg.objective.guidance_scale
    return Knobs(cfg.objective.name, cfg.train.steps, scale if isinstance(scale, (int, float)) else None, cfg.seed)


def _number(value: float):
    return int(value) if float(value).is_integer() else value


def build_request(prompt: Optional[str], config: str, knobs: Knobs, out_dir: Path) -> RunRequest:
    """A request whose config has passed every check a run would make before training starts.

    A knob left empty (None) keeps the config's value. Raises ConfigError (or ModelLoadError) with a
    message meant for the page.
    """
    if not (prompt or "").strip():
        raise ConfigError("the prompt is empty", hint="type what to make, e.g. a red cube")
    if not config:
        raise ConfigError("no config chosen", hint="pick one of the configs in the list")
    overrides = [f"out_dir={json.dumps(str(out_dir))}"]
    for key, value in (("objective.name", knobs.objective), ("train.steps", knobs.steps),
                       ("objective.guidance_scale", knobs.guidance_scale), ("seed", knobs.seed)):
        if key != "objective.name" and value not in (None, "") and not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        if value not in (None, ""):
            overrides.append(f"{key}={_number(value) if isinstance(value, (int, float)) else value}")
    prompt = (prompt or "").strip()
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ConfigError(f"the prompt is {len(prompt)} characters long; the page takes at most {MAX_PROMPT_CHARS}",
                          hint="shorten it, or run it from the command line")
    cfg = load_config(config, overrides, prompt)
    if cfg.train.steps > MAX_STEPS:
        raise ConfigError(f"{cfg.train.steps} steps is more than the page runs ({MAX_STEPS})",
                          hint="lower Steps, or run it from the command line: sds3d run ... train.steps=N")
    check_prompt_words(cfg.guide.model, prompt)  # hub models and the exact guide are checked as they load
    return RunRequest(prompt, config, overrides, cfg)


def explain(exc: Sds3dError) -> str:
    """An error as the page shows it: the message, then what to do about it."""
    return f"{exc}\n\nhint: {exc.hint}" if exc.hint else str(exc)
