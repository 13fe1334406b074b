"""The prompts file of `sds3d batch`: one job per prompt, every entry checked before any job starts.

Two formats. A text file: one prompt a line, blank lines and ``#`` comments skipped. A YAML or JSON
list whose entries are a prompt string or a mapping with ``prompt`` and optionally ``config`` (a YAML
file or shipped config name), ``overrides`` (a list of ``key=value`` or a mapping) and ``seed``.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import yaml

from sds3d.api import slugify
from sds3d.config import load_config
from sds3d.errors import ConfigError
from sds3d.files import read_text, yaml_error
from sds3d.guides.base import check_prompt_words

ENTRY_KEYS = ("prompt", "config", "overrides", "seed")
LIST_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class Job:
    number: int  # 1-based position in the prompts file
    prompt: str
    config: Optional[str]
    overrides: Tuple[str, ...]  # the command line's, then the entry's, then its seed

    @property
    def name(self) -> str:
        """The run folder's name inside the batch folder; the same on every rerun of the same file."""
        return f"{self.number:03d}-{slugify(self.prompt)}"


def read_jobs(path: Path, config: Optional[str] = None, overrides: Sequence[str] = ()) -> List[Job]:
    """Parse and validate every entry (its full run config included); errors name the line or entry."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"prompts file '{path}' does not exist", hint="give a text file (one prompt a line) or a YAML/JSON list")
    entries = _list_entries(path) if path.suffix.lower() in LIST_SUFFIXES else _text_entries(path)
    if not entries:
        raise ConfigError(f"'{path}' has no prompts", hint="one prompt a line; blank lines and # comments are skipped")
    return [_job(path, number, where, entry, config, overrides) for number, (where, entry) in enumerate(entries, 1)]


def default_batch_dir(path: Path, config: Optional[str] = None, overrides: Sequence[str] = ()) -> Path:
    """``<out_dir>/batch-<prompts file stem>``: fixed, so that running the same command again resumes."""
    out_dir = load_config(config, overrides, prompt=Path(path).stem).out_dir
    return Path(out_dir).expanduser() / f"batch-{slugify(Path(path).stem)}"


def _text_entries(path: Path) -> List[Tuple[str, dict]]:
    lines = enumerate(read_text(path, "prompts file").splitlines(), 1)
    return [(f"line {n}", {"prompt": line.strip()}) for n, line in lines if line.strip() and not line.lstrip().startswith("#")]


def _list_entries(path: Path) -> List[Tuple[str, dict]]:
    text = read_text(path, "prompts file")
    try:
        items = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise yaml_error(exc, path, "prompts file") from exc
    except ValueError as exc:
        raise ConfigError(f"cannot read prompts file '{path}': {exc}") from exc
    if items is None:
        return []
    if not isinstance(items, list):
        raise ConfigError(f"'{path}' must hold a list of entries, got a {type(items).__name__}",
                          hint='e.g. ["a red cube", {"prompt": "a blue sphere", "seed": 3}]')
    entries = []
    for n, item in enumerate(items, 1):
        if isinstance(item, str):
            item = {"prompt": item}
        if not isinstance(item, dict):
            raise ConfigError(f"{path}, entry {n}: expected a prompt or a mapping, got {item!r}",
                              hint=f"a mapping may have: {', '.join(ENTRY_KEYS)}")
        entries.append((f"entry {n}", item))
    return entries


def _job(path: Path, number: int, where: str, entry: dict, config: Optional[str], overrides: Sequence[str]) -> Job:
    unknown = [key for key in entry if key not in ENTRY_KEYS]
    if unknown:
        raise ConfigError(f"{path}, {where}: unknown key '{unknown[0]}'", hint=f"an entry may have: {', '.join(ENTRY_KEYS)}")
    prompt = entry.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ConfigError(f"{path}, {where}: no prompt", hint='give it as prompt: "a red cube"')
    seed = entry.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ConfigError(f"{path}, {where}: seed must be an integer, got {seed!r}")
    entry_config = entry.get("config", config)
    if entry_config is not None and not isinstance(entry_config, str):
        raise ConfigError(f"{path}, {where}: config must be a YAML path or a shipped config name, got {entry_config!r}")
    seed_override = [f"seed={seed}"] if seed is not None else []
    overrides = (*overrides, *_entry_overrides(path, where, entry.get("overrides", [])), *seed_override)
    job = Job(number, prompt.strip(), portable_config(entry_config), overrides)
    try:
        cfg = load_config(job.config, job.overrides, job.prompt)
        check_prompt_words(cfg.guide.model, job.prompt)
    except ConfigError as exc:
        raise ConfigError(f"{path}, {where} ({job.prompt!r}): {exc}", hint=exc.hint) from exc
    return job


def _entry_overrides(path: Path, where: str, overrides) -> List[str]:
    if isinstance(overrides, dict):
        return [f"{key}={value if isinstance(value, str) else json.dumps(value)}" for key, value in overrides.items()]
    if isinstance(overrides, list) and all(isinstance(o, str) for o in overrides):
        return overrides
    raise ConfigError(f"{path}, {where}: overrides must be a list of key=value or a mapping, got {overrides!r}",
                      hint="e.g. overrides: [train.steps=2000] or overrides: {train.steps: 2000}")


def portable_config(config: Optional[str]) -> Optional[str]:
    """A config file as an absolute path, since Ray workers need not share the driver's working directory."""
    if config and Path(config).expanduser().is_file():
        return str(Path(config).expanduser().resolve())
    return config
