"""Typed run configuration: YAML files over the schema (config_schema.py), dotted overrides, validation, schedules.

``config_schema.py`` is the one source of every key's type, default, meaning and range; ``configs/base.yaml`` is
generated from it. A method YAML starts with ``defaults: [base]`` and states only what differs. Any scalar marked
schedulable may be a number or ``[start_step, start, end, end_step]``.
"""

import dataclasses
import re
from pathlib import Path
from typing import List, Optional, Sequence

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from sds3d.config_schema import RunConfig, choices, field_at, is_schedule
from sds3d.config_schema import fields as schema_fields
from sds3d.errors import ConfigError
from sds3d.files import read_image, read_text, yaml_error, yaml_problem

# Links to the repository's top-level folders in a checkout, real folders in an installed wheel.
CONFIGS_DIR = (Path(__file__).parent / "configs").resolve()
ASSETS_DIR = (Path(__file__).parent / "assets").resolve()


def _asset_path(name: str) -> str:
    """``${asset:prior}`` in a YAML is the absolute path of assets/prior, wherever sds3d runs from."""
    return str(ASSETS_DIR / name)


OmegaConf.register_resolver("asset", _asset_path, replace=True)


def schedule(value, step: int, total_steps: int) -> float:
    """Evaluate a schedulable scalar at ``step`` of ``total_steps``: linear between start_step and
    end_step, clamped outside. When end_step is a float in (0, 1], both steps are fractions of the run,
    so one recipe anneals at the same point of a 400- or a 10000-step run.

    >>> schedule([0, 10.0, 1000.0, 5000], 2500, 10000)
    505.0
    >>> schedule([0, 10.0, 1000.0, 0.5], 2500, 10000)
    505.0
    """
    if isinstance(value, (int, float)):
        return float(value)
    start_step, start, end, end_step = value
    if by_fraction(value):
        start_step, end_step = start_step * total_steps, end_step * total_steps
    if step <= start_step:
        return float(start)
    if step >= end_step:
        return float(end)
    frac = (step - start_step) / (end_step - start_step)
    return float(start + frac * (end - start))


_OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")


def is_override(arg: str) -> bool:
    """True for a ``dotted.key=value`` command-line argument."""
    return bool(_OVERRIDE.match(arg))


def resolve_config_path(name_or_path: str) -> Path:
    """A path to a YAML file, or the name of a shipped config (``dreamfusion-sd``)."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    shipped = CONFIGS_DIR / f"{name_or_path.removesuffix('.yaml')}.yaml"
    if shipped.is_file():
        return shipped
    raise ConfigError(
        f"config file '{name_or_path}' does not exist",
        hint=f"give a path to a YAML file or one of the shipped configs: {', '.join(shipped_configs())}",
    )


def shipped_configs() -> List[str]:
    return sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml"))


def _read_yaml(path: Path) -> DictConfig:
    """A YAML file with its ``defaults: [...]`` merged in: every config of the chain once, parents before
    children and earlier entries first, so ``defaults: [dreamfusion-sd, csd]`` is base, dreamfusion-sd,
    csd, then the file (csd's own ``base`` does not undo dreamfusion-sd)."""
    merged = OmegaConf.create()
    for node in _defaults_chain(path, (), []):
        merged = OmegaConf.merge(merged, node)
    return merged


def _defaults_chain(path: Path, seen: Sequence[Path], done: List[Path]) -> List[DictConfig]:
    """The configs ``path`` includes, in merge order, each once (``done`` collects the paths merged)."""
    if path in seen:
        raise ConfigError(f"config '{path}' includes itself through 'defaults'")
    node = _read_node(path)
    parents = node.pop("defaults", ListConfig([]))
    if not isinstance(parents, ListConfig):
        raise ConfigError(f"'defaults' in '{path}' must be a list of config names, e.g. [base]")
    chain = []
    for parent in parents:
        name = f"{str(parent).removesuffix('.yaml')}.yaml"
        parent_path = next((p for p in (path.parent / name, CONFIGS_DIR / name) if p.is_file()), None)
        if parent_path is None:
            raise ConfigError(f"'{path}' names defaults '{parent}', found neither beside it nor in {CONFIGS_DIR}")
        if parent_path.resolve() not in done:
            chain += _defaults_chain(parent_path, (*seen, path), done)
    done.append(path.resolve())
    return [*chain, node]


def _read_node(path: Path) -> DictConfig:
    try:
        node = OmegaConf.create(read_text(path, "config"))
    except yaml.YAMLError as exc:
        raise yaml_error(exc, path, "config") from exc
    except (ValueError, OmegaConfBaseException) as exc:
        raise ConfigError(f"cannot read config '{path}': {exc}") from exc
    if not isinstance(node, DictConfig):
        raise ConfigError(f"config '{path}' must be a mapping of sections (train:, objective:, ...), got a list",
                          hint="see configs/base.yaml for the layout of a config")
    return node


def _explain(exc: OmegaConfBaseException) -> ConfigError:
    key = getattr(exc, "full_key", "") or ""
    parent_key = key.rsplit(".", 1)[0] if "." in key else ""
    message = str(exc).splitlines()[0]
    if isinstance(exc, ConfigKeyError):
        section = OmegaConf.structured(RunConfig)
        node = OmegaConf.select(section, parent_key) if parent_key else section
        valid = ", ".join(node.keys()) if isinstance(node, DictConfig) else ""
        where = f"'{parent_key}'" if parent_key else "the top level"
        return ConfigError(f"unknown config key '{key}'", hint=f"valid keys in {where}: {valid}")
    schema_key = re.sub(r"\[\d+\]$", "", key)  # export.formats[0] is export.formats' first item
    f = field_at(schema_key)
    if f is not None and choices(f):
        what = schema_key.rsplit(".", 1)[-1].removesuffix("s") if schema_key != key else "value"  # a list's item: "format"
        return ConfigError(f"{schema_key}: unknown {what} '{exc.value}'", hint=f"choose one of: {', '.join(choices(f))}")
    doc = f"{f.metadata['doc']}; " if f is not None else ""
    return ConfigError(f"bad value for '{key}': {message}",
                       hint=f"{doc}configs/base.yaml and `sds3d keys` list every key and its type")


def load_config(
    config: Optional[str] = None,
    overrides: Sequence[str] = (),
    prompt: Optional[str] = None,
    values: Optional[dict] = None,
) -> DictConfig:
    """Build a validated run config: schema <- base.yaml <- ``config`` <- prompt <- ``values`` (a nested mapping set
    by the program, such as amortize.prompts) <- overrides.

    Raises ConfigError naming the key (and the valid choices) for an unknown key, a wrong type, a
    missing prompt, a bad schedule, an unknown choice or an unreadable prompt.image; nothing is loaded before
    this passes.
    """
    source = resolve_config_path(config) if config else CONFIGS_DIR / "base.yaml"
    layers = [_read_yaml(source)]
    if prompt is not None:
        layers.append({"prompt": {"text": prompt}})
    cfg = _build([*layers, values or {}], overrides)
    if cfg.prompt.image:  # read here, for a new run only: a finished run exports without its reference image
        read_image(cfg.prompt.image, "prompt.image")
    return cfg


def _parse_overrides(overrides: Sequence[str]) -> DictConfig:
    """The overrides as a config; a value YAML cannot read is a ConfigError naming its override."""
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except yaml.YAMLError as whole:
        for override in overrides:  # only on failure: find the one to name
            try:
                OmegaConf.from_dotlist([override])
            except yaml.YAMLError as exc:
                raise ConfigError(f"cannot read the value of override '{override}': {yaml_problem(exc)}",
                                  hint="quote a value with special characters: key='value'") from exc
        raise ConfigError(f"cannot read the overrides {list(overrides)}: {yaml_problem(whole)}") from whole


def _build(layers: list, overrides: Sequence[str]) -> DictConfig:
    bad = [o for o in overrides if not is_override(o)]
    if bad:
        raise ConfigError(f"cannot read override '{bad[0]}'", hint="overrides look like key.path=value")
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(RunConfig), *layers, _parse_overrides(overrides))
    except OmegaConfBaseException as exc:
        raise _explain(exc) from exc
    except (TypeError, ValueError) as exc:  # omegaconf's own: a mapping given where the schema has a list, or back
        raise ConfigError(f"a value does not fit its key's kind (a mapping, list or value): {exc}",
                          hint=f"check the overrides {list(overrides)} against configs/base.yaml") from exc
    if OmegaConf.is_missing(cfg.prompt, "text") and cfg.layout.file:
        cfg.prompt.text = layout_prompt(cfg.layout.file)
    validate(cfg)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def validate(cfg: DictConfig) -> None:
    missing = sorted(OmegaConf.missing_keys(cfg))
    if "prompt.text" in missing:
        raise ConfigError("no prompt given", hint='sds3d run "a hamburger"  (or prompt.text="...")')
    if missing:
        raise ConfigError(f"config keys without a value: {', '.join(missing)}", hint="set them in the YAML or as key=value")
    if not cfg.prompt.text.strip():
        raise ConfigError("the prompt is empty", hint='sds3d run "a hamburger"')
    if not -(2**63) <= cfg.seed < 2**64:
        raise ConfigError(f"seed {cfg.seed} does not fit in 64 bits", hint="give a seed between 0 and 2**64 - 1")
    for key, f, _ in schema_fields():
        if not dataclasses.is_dataclass(f.type):
            check_value(key, OmegaConf.select(cfg, key), f)
    if cfg.prompt.perp_neg.enabled and not cfg.prompt.view_dependent:
        raise ConfigError("prompt.perp_neg.enabled needs view-dependent prompts", hint="set prompt.view_dependent=true")
    validate_layout_keys(cfg)
    validate_image_prompt(cfg)


def validate_image_prompt(cfg: DictConfig) -> None:
    """prompt.image and guide.ip_adapter come together, and the guide is not one that
    cannot take an image (the exact world denoiser, or a local model without a VAE: the bundled prior, DeepFloyd
    IF); a pixel-space hub id is refused as its guide loads."""
    image, adapter, model = cfg.prompt.image, cfg.guide.ip_adapter, cfg.guide.model
    if image and not adapter:
        raise ConfigError("prompt.image needs an IP-Adapter to show the image to the guide",
                          hint="set guide.ip_adapter (e.g. h94/IP-Adapter) with a Stable Diffusion 1.5 guide.model")
    if adapter and not image:
        raise ConfigError("guide.ip_adapter is set but prompt.image is not", hint="give prompt.image=PATH, or guide.ip_adapter=\"\"")
    if not adapter:
        return
    if model.startswith("exact:") or (Path(model).expanduser().is_dir() and not (Path(model).expanduser() / "vae").is_dir()):
        raise ConfigError(f"the guide '{model}' cannot take an image prompt: an IP-Adapter conditions a Stable Diffusion "
                          "(latent) UNet, not the bundled prior, DeepFloyd IF or the exact world guide",
                          hint="guide.model=<SD 1.5 hub id or folder>, or drop prompt.image and guide.ip_adapter")


def validate_layout_keys(cfg: DictConfig) -> None:
    if cfg.layout.file and not Path(cfg.layout.file).expanduser().is_file():
        raise ConfigError(f"layout.file: '{cfg.layout.file}' does not exist",
                          hint="give a YAML or JSON layout, e.g. assets/layouts/cube-left-of-sphere.yaml")
    if cfg.objective.name == "semantic" and cfg.prompt.perp_neg.enabled:
        raise ConfigError("objective 'semantic' does not combine with Perp-Neg (its negatives belong to the global prompt's views)",
                          hint="prompt.perp_neg.enabled=false")
    if cfg.objective.semantic.dilation < 1 or cfg.objective.semantic.dilation % 2 == 0:
        raise ConfigError(f"objective.semantic.dilation must be a positive odd window, got {cfg.objective.semantic.dilation}",
                          hint="e.g. 5 (the authors')")


def check_value(key: str, value, f: dataclasses.Field) -> None:
    """The range, length or schedule shape the schema gives ``key``; the key's documentation is the hint."""
    meta, hint = f.metadata, f.metadata["doc"]
    if is_schedule(f):
        check_schedule(key, value)
    if meta["length"] is not None and len(value) != meta["length"]:
        if meta["ordered_pair"]:
            raise ConfigError(f"{key}: expected [low, high], got {list(value)}", hint=f"give {key}=[low,high]")
        raise ConfigError(f"{key}: expected {meta['length']} numbers, got {list(value)}", hint=hint)
    if meta["ordered_pair"] and value[0] > value[1]:
        raise ConfigError(f"{key}: lower bound {value[0]} is above upper bound {value[1]}",
                          hint=f"give {key}=[low,high] with low <= high")
    low, high = meta["low"], meta["high"]
    for number in schedule_values(value) if is_schedule(f) else [value]:
        if meta["positive"] and number <= 0:
            raise ConfigError(f"{key} must be positive, got {number}", hint=hint)
        if low is not None and high is not None and not low <= number <= high:
            raise ConfigError(f"{key} must lie in [{low:g}, {high:g}], got {number}", hint=hint)
        if low is not None and high is None and number < low:
            raise ConfigError(f"{key} must be {low:g} or more, got {number}", hint=hint)


def layout_prompt(path: str) -> str:
    """The global prompt of a layout file (the whole layout is checked when the run loads it)."""
    file = Path(path).expanduser()
    try:
        data = yaml.safe_load(read_text(file, "layout"))
    except yaml.YAMLError as exc:
        raise yaml_error(exc, file, "layout", hint="give a YAML or JSON layout file") from exc
    prompt = data.get("prompt") if isinstance(data, dict) else None
    if not isinstance(prompt, str) or not prompt.strip():
        raise ConfigError(f"layout '{path}' has no global prompt", hint="add a top-level 'prompt: ...' to the layout")
    return prompt


def check_schedule(key: str, value) -> None:
    if isinstance(value, bool) or not (isinstance(value, (int, float)) or _is_schedule(value)):
        raise ConfigError(
            f"{key}: expected a number or [start_step, start_value, end_value, end_step], got {value!r}",
            hint=f"e.g. {key}=0.5 or {key}=[0,0.98,0.5,5000] (start_step <= end_step)",
        )


def schedule_values(value) -> list:
    """The values a schedulable scalar takes: the number itself, or a schedule's start and end values."""
    return [value] if isinstance(value, (int, float)) else [value[1], value[2]]


def by_fraction(value) -> bool:
    """Whether a schedule's steps are fractions of the run: its end_step is a float in (0, 1]."""
    return isinstance(value[3], float) and 0.0 < value[3] <= 1.0


def _is_schedule(value) -> bool:
    if not isinstance(value, (list, ListConfig)) or len(value) != 4:
        return False
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return False
    return value[0] <= value[3]


def save_config(cfg: DictConfig, path: Path) -> None:
    from sds3d.atomic import atomic_write

    with atomic_write(path) as tmp:
        OmegaConf.save(cfg, tmp, resolve=True)


def load_refine_config(run_config: Path, config: Optional[str], overrides: Sequence[str] = ()) -> DictConfig:
    """A NeRF run's saved config with the ``refine`` section of ``config`` (a YAML file or shipped name;
    None keeps the run's own) over it, then ``overrides``: the mesh stage keeps the run's prompt, guide
    and objective."""
    if not run_config.is_file():
        raise ConfigError(f"'{run_config}' does not exist", hint="give a run folder made by `sds3d run`")
    layers = [_read_yaml(CONFIGS_DIR / "base.yaml"), OmegaConf.load(run_config)]
    if config is not None:
        layers.append({"refine": _read_yaml(resolve_config_path(config)).get("refine", {})})
    return _build(layers, overrides)


def load_saved_config(path: Path, overrides: Sequence[str] = (), values: Optional[dict] = None) -> DictConfig:
    """The resolved config a run saved, with optional ``values`` (as ``load_config``'s) and overrides (e.g.
    ``train.steps`` to run longer)."""
    if not path.is_file():
        raise ConfigError(f"'{path}' does not exist", hint="give a run folder made by `sds3d run`")
    # Under base.yaml, so that keys added since the run was made take their defaults.
    return _build([_read_yaml(CONFIGS_DIR / "base.yaml"), OmegaConf.load(path), values or {}], overrides)
