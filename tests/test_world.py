"""The benchmark world: captions, parsing, sampling, vocabulary and the ground-truth renderer."""

from __future__ import annotations

import math
import random

import pytest
import torch

from sds3d.cameras import VIEWS, make_cameras
from sds3d.world.render import render_scenes
from sds3d.world.scenes import COLORS, HELD_OUT, SHAPES, pair, parse_caption, sample_scene, single, vocabulary


def front_camera(resolution: int, distance: float = 2.0, fovy: float = 50.0, elevation: float = 0.0,
                 azimuth: float = 0.0):
    t = torch.tensor
    return make_cameras(t([elevation]), t([azimuth]), t([distance]), t([fovy]), resolution, resolution)


def sampled(count: int = 200, seed: int = 0, held_out: bool = False):
    rng = random.Random(seed)
    return [sample_scene(rng, held_out=held_out) for _ in range(count)]


def test_captions():
    assert single("cube", "red").caption == "a red cube"
    left = pair(("red", "cube"), "to the left of", ("blue", "sphere"))
    assert left.caption == "a red cube to the left of a blue sphere"
    on_top = pair(("green", "torus"), "on top of", ("orange", "cone"))
    assert on_top.caption == "a green torus on top of an orange cone"  # "an" before a vowel


def test_parse_caption_round_trips_and_ignores_view_suffix():
    scenes = sampled(100)
    assert any(s.relation for s in scenes) and any(s.relation is None for s in scenes)
    for scene in scenes:
        assert parse_caption(scene.caption) == scene
        assert parse_caption(f"{scene.caption}, front view") == scene
        assert parse_caption(f"{scene.caption}, overhead view") == scene


@pytest.mark.parametrize("caption", ["a pink cube", "a red hamburger", "red cube", "a red cube beside a blue sphere",
                                     "a red cube to the left of a blue"])
def test_bad_captions_raise_value_error_naming_vocabulary(caption):
    with pytest.raises(ValueError) as info:
        parse_caption(caption)
    message = str(info.value)
    assert all(c in message for c in COLORS) and all(s in message for s in SHAPES)


@pytest.mark.parametrize("held_out", [False, True])
def test_sample_scene_respects_held_out_pairs(held_out):
    pairs = {(o.color, o.shape) for scene in sampled(300, held_out=held_out) for o in scene.objects}
    if held_out:
        assert pairs == set(HELD_OUT)
    else:
        assert not pairs & set(HELD_OUT)
        assert len(pairs) > 15  # the training pool is actually sampled, not a few pairs


def test_sample_scene_is_deterministic_by_seed():
    assert sampled(50, seed=3) == sampled(50, seed=3)
    assert sampled(50, seed=3) != sampled(50, seed=4)


def test_vocabulary_covers_captions_with_view_suffixes():
    words = set(vocabulary())
    for scene in sampled(200):
        for caption in [scene.caption] + [f"{scene.caption}, {v} view" for v in VIEWS]:
            assert set(caption.replace(",", " , ").split()) <= words, caption


def test_to_the_left_of_is_left_from_the_front_camera():
    scene = pair(("red", "cube"), "to the left of", ("blue", "sphere"))
    assert scene.objects[0].center[1] < 0 < scene.objects[1].center[1]  # first object at -y
    ids = render_scenes([scene], front_camera(32), shading="albedo").object_ids[0]
    columns = torch.arange(32).expand(32, 32)
    assert (ids == 0).sum() > 20 and (ids == 1).sum() > 20
    assert columns[ids == 0].max() < 16  # first object: left half of the image
    assert columns[ids == 1].min() >= 16


def test_sphere_silhouette_matches_projected_disc():
    resolution, distance, fovy = 64, 2.0, 50.0
    scene = single("sphere", "red")
    radius = scene.objects[0].size
    mask = render_scenes([scene], front_camera(resolution, distance, fovy)).mask[0]
    focal = 0.5 * resolution / math.tan(math.radians(fovy) / 2)
    radius_px = focal * radius / math.sqrt(distance**2 - radius**2)
    expected = math.pi * radius_px**2
    assert mask.sum().item() == pytest.approx(expected, rel=0.03)


def test_albedo_shading_is_exactly_the_named_colour():
    scene = single("cylinder", "purple")
    out = render_scenes([scene], front_camera(32, elevation=20.0), shading="albedo")
    inside = out.mask[0] == 1.0
    assert inside.sum() > 50
    assert torch.allclose(out.rgb[0][inside], torch.tensor(COLORS["purple"]).expand(int(inside.sum()), 3), atol=1e-6)
    shaded = render_scenes([scene], front_camera(32, elevation=20.0)).rgb[0][inside]
    assert not torch.allclose(shaded, out.rgb[0][inside], atol=1e-2)  # diffuse shading differs


def test_object_ids_mark_each_object():
    scene = pair(("green", "torus"), "on top of", ("orange", "cube"))
    out = render_scenes([scene], front_camera(32, elevation=15.0), shading="albedo")
    ids, rgb = out.object_ids[0], out.rgb[0]
    assert set(ids.unique().tolist()) == {-1, 0, 1}
    for k, obj in enumerate(scene.objects):
        solid = (ids == k) & (out.mask[0] == 1.0)
        assert solid.sum() > 10
        assert torch.allclose(rgb[solid], torch.tensor(COLORS[obj.color]).expand(int(solid.sum()), 3), atol=1e-6)
    rows = torch.arange(32)[:, None].expand(32, 32)
    assert rows[ids == 0].float().mean() < rows[ids == 1].float().mean()  # on top: higher in the image


def test_background_is_white():
    scenes = [single("cone", "blue"), pair(("red", "sphere"), "to the left of", ("yellow", "torus"))]
    cameras = make_cameras(torch.tensor([10.0, 30.0]), torch.tensor([0.0, 120.0]), torch.tensor([1.8, 1.8]),
                           torch.tensor([55.0, 55.0]), 24, 24)
    out = render_scenes(scenes, cameras)
    empty = out.mask == 0.0
    assert empty.sum() > 100
    assert torch.equal(out.rgb[empty], torch.ones(int(empty.sum()), 3))
    assert (out.object_ids[empty] == -1).all()
