"""What the schema says, written out: ``configs/base.yaml`` (every default with its documentation) and the key listing
of ``sds3d keys``. ``python -m sds3d.config_docs`` rewrites base.yaml after the schema changes."""

import dataclasses
import textwrap
from pathlib import Path
from typing import List, Tuple

import yaml

from sds3d.config_schema import MISSING_VALUE, choices, default, describe, fields

BASE_YAML = Path(__file__).parent / "configs" / "base.yaml"
COMMENT_COLUMN = 30
WIDTH = 120
HEADER = """\
# Every default of a run, one documented key each: a CPU-sized run on the bundled prior (used without --config).
# Generated from sds3d/config_schema.py by `python -m sds3d.config_docs`: edit the schema, not this file.
# A method YAML starts with `defaults: [base]` and states only what differs. Keys marked (schedule) take a number or
# [start_step, start_value, end_value, end_step] (linear between the steps, clamped outside); when end_step is
# a float in (0, 1], both steps are fractions of the run: [0, 10, 1, 0.5] falls over the first half of any run.
"""


def _yaml_value(value) -> str:
    if value == MISSING_VALUE:
        return MISSING_VALUE
    if value == "":
        return '""'
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("\n...")


def _commented(code: str, doc: str) -> List[str]:
    if not doc:
        return [code]
    column = max(COMMENT_COLUMN, len(code) + 2)
    lines = textwrap.wrap(doc, WIDTH - column - 2, break_on_hyphens=False) or [""]
    first = f"{code:<{column}}# {lines[0]}"
    return [first] + [f"{'':<{column}}# {line}" for line in lines[1:]]


def base_yaml() -> str:
    """configs/base.yaml's text: the schema's defaults, each key with its documentation."""
    out = [HEADER.rstrip("\n")]
    for key, f, depth in fields():
        indent = "  " * depth
        name = key.rsplit(".", 1)[-1]
        if depth == 0 and (dataclasses.is_dataclass(f.type) or out[-1].startswith("  ")):
            out.append("")  # a blank line before each section and after the last one
        code = f"{indent}{name}:" if dataclasses.is_dataclass(f.type) else f"{indent}{name}: {_yaml_value(default(f))}"
        out += _commented(code, describe(f))
    return "\n".join(out) + "\n"


def key_listing(prefix: str = "") -> List[str]:
    """``key = default  doc`` for every key under ``prefix`` (a dotted section or key; "" for all)."""
    prefix = prefix.rstrip(".")
    return [f"{key} = {_yaml_value(default(f))}    {describe(f)}{_valid(f)}" for key, f, _ in fields()
            if not dataclasses.is_dataclass(f.type) and (not prefix or key == prefix or key.startswith(prefix + "."))]


def _valid(f: dataclasses.Field) -> str:
    """What validation accepts, when the schema says more than the type."""
    meta = f.metadata
    if choices(f):
        return f"  [one of: {', '.join(choices(f))}]"
    if meta.get("low") is not None and meta.get("high") is not None:
        return f"  [{meta['low']:g} to {meta['high']:g}]"
    if meta.get("positive"):
        return "  [above 0]"
    if meta.get("low") is not None:
        return f"  [{meta['low']:g} or more]"
    return ""


def sections() -> List[Tuple[str, str]]:
    """The top-level sections with their documentation."""
    return [(key, describe(f)) for key, f, depth in fields() if depth == 0 and dataclasses.is_dataclass(f.type)]


if __name__ == "__main__":
    BASE_YAML.write_text(base_yaml())
    print(f"wrote {BASE_YAML}")
