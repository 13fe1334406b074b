"""Reading the files users hand in (configs, layouts, prompt lists, reference images) with errors that name the
file and, for YAML, the line and column."""

from pathlib import Path

import yaml

from sds3d.errors import ConfigError


def read_text(path: Path, what: str) -> str:
    """The file's UTF-8 text; a binary or otherwise undecodable file is a ConfigError."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} '{path}' is not UTF-8 text (byte {exc.start} cannot be decoded): is it a binary file?",
                          hint=f"give a text {what}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read {what} '{path}': {exc.strerror or exc}") from exc


def yaml_error(exc: yaml.YAMLError, path: Path, what: str, hint: str = "") -> ConfigError:
    """A YAML syntax error as a ConfigError: '<what> <path>, line L, column C: <problem>' (1-based)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = yaml_problem(exc)
    where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return ConfigError(f"{what} '{path}'{where}: {problem}", hint=hint or "fix the YAML syntax there")


def yaml_problem(exc: yaml.YAMLError) -> str:
    """What a YAML error says is wrong, without its position."""
    return getattr(exc, "problem", None) or str(exc).splitlines()[0]


def read_image(path: Path, what: str):
    """The image file as an RGB PIL image; a missing, unreadable or non-image file is a ConfigError."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(Path(path).expanduser()) as image:
            return image.convert("RGB")
    except UnidentifiedImageError as exc:
        raise ConfigError(f"{what} '{path}' is not an image (PNG, JPEG, WebP, ...)", hint=f"give an image file as {what}") from exc
    except OSError as exc:  # missing, unreadable or truncated
        raise ConfigError(f"cannot read {what} '{path}': {exc.strerror or exc}", hint=f"give an image file as {what}") from exc
