"""Layouts: a global prompt and objects in boxes, each with its own prompt and optional parts.

A layout file (YAML or JSON) reads::

    prompt: a red cube to the left of a blue sphere   # the whole scene
    objects:
      - prompt: a red cube
        center: [0.0, -0.42, 0.0]     # scene frame: z up, front camera on +x, viewer's right is +y
        size: [0.55, 0.55, 0.55]      # full side lengths along x, y, z
        yaw: 0.0                      # optional: degrees about z from the scene's front to the object's
        parts:                        # optional: boxes inside the object's, each with its own prompt
          - {prompt: ..., center: [...], size: [...]}

Every leaf (a part, or an object without parts) is one region with its own code and sub-prompt.
"""

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import torch
import yaml

from sds3d.errors import ConfigError
from sds3d.files import read_text, yaml_error

Vec3 = Tuple[float, float, float]
LAYOUT_KEYS = ("prompt", "objects")
OBJECT_KEYS = ("prompt", "center", "size", "yaw", "parts")
PART_KEYS = ("prompt", "center", "size")
HINT = "a layout has 'prompt' and 'objects'; each object 'prompt', 'center', 'size' ([x, y, z]), optional 'yaw' and 'parts'"


@dataclass(frozen=True)
class Box:
    center: Vec3
    size: Vec3  # full side lengths

    @property
    def low(self) -> Vec3:
        return tuple(c - s / 2 for c, s in zip(self.center, self.size))

    @property
    def high(self) -> Vec3:
        return tuple(c + s / 2 for c, s in zip(self.center, self.size))

    def overlap(self, other: "Box") -> float:
        """Volume shared with ``other`` (0 for boxes that only touch)."""
        sides = [max(0.0, min(h1, h2) - max(l1, l2)) for l1, h1, l2, h2 in zip(self.low, self.high, other.low, other.high)]
        return sides[0] * sides[1] * sides[2]

    def holds(self, points: torch.Tensor) -> torch.Tensor:
        """points [N, 3] -> bool [N]: inside the box (half-open [low, high) per axis, as ``Layout.region_codes``)."""
        low = torch.tensor(self.low, dtype=points.dtype, device=points.device)
        high = torch.tensor(self.high, dtype=points.dtype, device=points.device)
        return ((points >= low) & (points < high)).all(-1)

    def contains(self, other: "Box", tol: float = 1e-6) -> bool:
        return all(lo - tol <= low and high <= hi + tol for lo, hi, low, high in zip(self.low, self.high, other.low, other.high))


@dataclass(frozen=True)
class Part:
    prompt: str
    box: Box


@dataclass(frozen=True)
class LayoutObject:
    prompt: str
    box: Box
    yaw: float = 0.0
    parts: Tuple[Part, ...] = ()

    def view_angles(self, positions: torch.Tensor, centre: Optional[Vec3] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Elevation and azimuth [B] (degrees) of cameras at ``positions`` [B, 3] seen from this object's
        own frame: centred on its box (or on ``centre``, one of its parts') and turned by its yaw (the
        object-dependent view descriptor)."""
        rel = positions - torch.tensor(centre or self.box.center, dtype=positions.dtype, device=positions.device)
        elevation = torch.rad2deg(torch.atan2(rel[:, 2], rel[:, :2].norm(dim=-1)))
        return elevation, torch.rad2deg(torch.atan2(rel[:, 1], rel[:, 0])) - self.yaw


@dataclass(frozen=True)
class Region:
    """A leaf of the layout: what gets its own code and sub-prompt. ``obj`` indexes Layout.objects."""

    prompt: str
    box: Box
    obj: int


@dataclass(frozen=True)
class Layout:
    prompt: str
    objects: Tuple[LayoutObject, ...]

    @property
    def regions(self) -> List[Region]:
        """Each object's parts, or the object itself when it has none, in file order."""
        return [Region(leaf.prompt, leaf.box, k) for k, o in enumerate(self.objects) for leaf in (o.parts or (o,))]

    def holds(self, points: torch.Tensor) -> torch.Tensor:
        """points [N, 3] -> bool [N]: inside some object's box."""
        return torch.stack([o.box.holds(points) for o in self.objects]).any(0)

    def region_codes(self, points: torch.Tensor) -> torch.Tensor:
        """points [N, 3] -> one-hot codes [N, K] of the region box containing each point (half-open
        [low, high) per axis, so touching boxes never share a point); all zero outside every box."""
        regions = self.regions
        low = torch.tensor([r.box.low for r in regions], dtype=points.dtype, device=points.device)  # [K, 3]
        high = torch.tensor([r.box.high for r in regions], dtype=points.dtype, device=points.device)
        inside = (points[:, None] >= low) & (points[:, None] < high)  # [N, K, 3]
        return inside.all(-1).to(points.dtype)

    def to_dict(self) -> dict:
        def box(b: Box) -> dict:
            return {"center": list(b.center), "size": list(b.size)}

        return {"prompt": self.prompt, "objects": [
            {"prompt": o.prompt, **box(o.box), "yaw": o.yaw,
             **({"parts": [{"prompt": p.prompt, **box(p.box)} for p in o.parts]} if o.parts else {})}
            for o in self.objects]}


def load_layout(path: str, radius: Optional[float] = None) -> Layout:
    """Reads and validates a layout file; with ``radius``, every box must fit in the scene cube."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"layout file '{path}' does not exist",
                          hint="give a YAML or JSON layout, e.g. assets/layouts/cube-left-of-sphere.yaml")
    text = read_text(file, "layout")
    try:
        data = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise yaml_error(exc, file, "layout", hint=HINT) from exc
    except ValueError as exc:
        raise ConfigError(f"cannot read layout '{path}': {str(exc).splitlines()[0]}", hint=HINT) from exc
    return parse_layout(data, radius, source=str(path))


def parse_layout(data, radius: Optional[float] = None, source: str = "layout") -> Layout:
    """A validated Layout from plain data; ConfigError names the first problem and where it is."""
    _keys(data, LAYOUT_KEYS, source)
    objects = data.get("objects")
    if not isinstance(objects, list) or not objects:
        raise ConfigError(f"{source}: 'objects' must be a non-empty list", hint=HINT)
    parsed = []
    for k, item in enumerate(objects):
        where = f"{source}: object {k + 1}"
        _keys(item, OBJECT_KEYS, where)
        prompt, box = _prompt(item, where), _box(item, where)
        parts = tuple(Part(_prompt(p, f"{where} part {j + 1}"), _box(p, f"{where} part {j + 1}"))
                      for j, p in enumerate(_parts(item, where)))
        for j, part in enumerate(parts):
            if not box.contains(part.box):
                raise ConfigError(f"{where} part {j + 1} ('{part.prompt}') reaches outside its object's box",
                                  hint="a part's box must lie inside the box of the object it belongs to")
        _disjoint(where, [(f"part {j + 1} ('{p.prompt}')", p.box) for j, p in enumerate(parts)])
        yaw = item.get("yaw", 0.0)
        if isinstance(yaw, bool) or not isinstance(yaw, (int, float)):
            raise ConfigError(f"{where}: 'yaw' must be a number of degrees, got {yaw!r}", hint="e.g. yaw: 90 turns its front to +y")
        parsed.append(LayoutObject(prompt, box, float(yaw), parts))
    _disjoint(source, [(f"object {k + 1} ('{o.prompt}')", o.box) for k, o in enumerate(parsed)])
    if radius is not None:
        for k, o in enumerate(parsed):
            if any(abs(v) > radius + 1e-6 for v in (*o.box.low, *o.box.high)):
                raise ConfigError(f"{source}: object {k + 1} ('{o.prompt}') reaches outside the scene cube [-{radius}, {radius}]^3",
                                  hint="move or shrink its box, or raise scene.radius")
    return Layout(_prompt(data, source), tuple(parsed))


def _keys(item, allowed: Tuple[str, ...], where: str) -> None:
    if not isinstance(item, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(item).__name__}", hint=HINT)
    unknown = [k for k in item if k not in allowed]
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}'", hint=f"valid keys: {', '.join(allowed)}")


def _prompt(item: dict, where: str) -> str:
    prompt = item.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ConfigError(f"{where}: missing prompt", hint="give it a non-empty 'prompt' string")
    return prompt.strip()


def _vec3(item: dict, key: str, where: str) -> Vec3:
    value = item.get(key)
    if not isinstance(value, list) or len(value) != 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise ConfigError(f"{where}: '{key}' must be three numbers [x, y, z], got {value!r}", hint=HINT)
    return tuple(float(v) for v in value)


def _box(item: dict, where: str) -> Box:
    box = Box(_vec3(item, "center", where), _vec3(item, "size", where))
    if min(box.size) <= 0:
        raise ConfigError(f"{where}: degenerate box, size {list(box.size)}", hint="every side length must be positive")
    return box


def _parts(item: dict, where: str) -> list:
    parts = item.get("parts", [])
    if not isinstance(parts, list):
        raise ConfigError(f"{where}: 'parts' must be a list", hint=HINT)
    for j, part in enumerate(parts):
        _keys(part, PART_KEYS, f"{where} part {j + 1}")
    return parts


def _disjoint(where: str, named_boxes: List[Tuple[str, Box]]) -> None:
    for (name_a, a), (name_b, b) in itertools.combinations(named_boxes, 2):
        if a.overlap(b) > 1e-9:
            raise ConfigError(f"{where}: {name_a} and {name_b} have overlapping boxes",
                              hint="boxes of objects (and of parts of one object) may touch but not overlap")
