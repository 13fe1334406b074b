"""The benchmark world: primitives in named colours, alone or in pairs with a spatial relation.

Everything is deterministic by seed. Scene frame as in ``sds3d.cameras``: z up, the front camera sits
on +x, so the viewer's right is +y: "A to the left of B" puts A at -y and B at +y.
"""

import random
from dataclasses import dataclass
from typing import List, Optional, Tuple

SHAPES = ("cube", "sphere", "cone", "cylinder", "torus")
COLORS = {
    "red": (0.85, 0.12, 0.10),
    "green": (0.15, 0.65, 0.20),
    "blue": (0.12, 0.25, 0.85),
    "yellow": (0.95, 0.85, 0.15),
    "purple": (0.55, 0.20, 0.70),
    "orange": (0.95, 0.50, 0.10),
}
RELATIONS = ("to the left of", "on top of")
# Colour-shape pairs never shown in training, to measure generalisation.
HELD_OUT = (("green", "cone"), ("blue", "torus"), ("yellow", "cube"), ("purple", "sphere"), ("orange", "cylinder"))
BACKGROUND = (1.0, 1.0, 1.0)
SINGLE_SIZE, PAIR_SIZE, PAIR_OFFSET = 0.5, 0.34, 0.42
PAIR_PROB = 0.4  # share of pairs among the scenes the prior is trained on


@dataclass(frozen=True)
class Primitive:
    shape: str
    color: str
    center: Tuple[float, float, float]
    size: float  # half extent: radius of the sphere, half side of the cube, ...

    @property
    def phrase(self) -> str:
        article = "an" if self.color[0] in "aeiou" else "a"
        return f"{article} {self.color} {self.shape}"


@dataclass(frozen=True)
class Scene:
    objects: Tuple[Primitive, ...]
    relation: Optional[str] = None  # how objects[0] relates to objects[1]

    @property
    def caption(self) -> str:
        if self.relation is None:
            return self.objects[0].phrase
        return f"{self.objects[0].phrase} {self.relation} {self.objects[1].phrase}"


def single(shape: str, color: str) -> Scene:
    return Scene((Primitive(shape, color, (0.0, 0.0, 0.0), SINGLE_SIZE),))


def pair(first: Tuple[str, str], relation: str, second: Tuple[str, str]) -> Scene:
    """``first`` and ``second`` are (colour, shape)."""
    if relation == "to the left of":
        centers = ((0.0, -PAIR_OFFSET, 0.0), (0.0, PAIR_OFFSET, 0.0))
    elif relation == "on top of":
        centers = ((0.0, 0.0, PAIR_OFFSET), (0.0, 0.0, -PAIR_OFFSET))
    else:
        raise ValueError(f"unknown relation '{relation}'; choose one of {RELATIONS}")
    (c1, s1), (c2, s2) = first, second
    return Scene((Primitive(s1, c1, centers[0], PAIR_SIZE), Primitive(s2, c2, centers[1], PAIR_SIZE)), relation)


def parse_caption(caption: str) -> Scene:
    """The scene a world caption describes (view suffixes such as ", front view" are ignored)."""
    text = caption.split(",")[0].strip()
    for relation in RELATIONS:
        if f" {relation} " in text:
            left, right = text.split(f" {relation} ")
            return pair(_colour_shape(left), relation, _colour_shape(right))
    color, shape = _colour_shape(text)
    return single(shape, color)


def _colour_shape(phrase: str) -> Tuple[str, str]:
    words = phrase.split()
    if len(words) != 3 or words[0] not in ("a", "an") or words[1] not in COLORS or words[2] not in SHAPES:
        raise ValueError(f"'{phrase}' is not 'a <colour> <shape>' with colours {list(COLORS)} and shapes {list(SHAPES)}")
    return words[1], words[2]


def training_pairs() -> List[Tuple[str, str]]:
    return [(c, s) for c in COLORS for s in SHAPES if (c, s) not in HELD_OUT]


def sample_scene(rng: random.Random, pair_prob: float = PAIR_PROB, held_out: bool = False) -> Scene:
    """A random scene; with ``held_out`` every object uses a held-out colour-shape pair."""
    pool = list(HELD_OUT) if held_out else training_pairs()
    if rng.random() >= pair_prob:
        color, shape = rng.choice(pool)
        return single(shape, color)
    first, second = rng.choice(pool), rng.choice(pool)
    while second == first:
        second = rng.choice(pool)
    return pair(first, rng.choice(RELATIONS), second)


def vocabulary() -> List[str]:
    """Every word a world caption (with a view suffix) can contain, plus the comma."""
    words = {"a", "an", ",", "view", "front", "side", "back", "overhead"} | set(COLORS) | set(SHAPES)
    for relation in RELATIONS:
        words |= set(relation.split())
    return sorted(words)
