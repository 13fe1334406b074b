"""Layouts: parsing of the shipped examples, every validation error naming its problem, region codes
of points, object-frame view angles, and how a layout reaches the run config."""

import copy
import json
import math
import re

import pytest
import torch

from sds3d.config import ASSETS_DIR, load_config
from sds3d.errors import ConfigError
from sds3d.layout import load_layout, parse_layout
from sds3d.train import build_scene

PAIR = ASSETS_DIR / "layouts" / "cube-left-of-sphere.yaml"
PARTS = ASSETS_DIR / "layouts" / "cylinder-on-cube-parts.yaml"


def pair_data() -> dict:
    return {"prompt": "a red cube to the left of a blue sphere", "objects": [
        {"prompt": "a red cube", "center": [0.0, -0.42, 0.0], "size": [0.8, 0.8, 0.8]},
        {"prompt": "a blue sphere", "center": [0.0, 0.42, 0.0], "size": [0.8, 0.8, 0.8]}]}


def test_pair_example_has_one_region_per_object():
    layout = load_layout(str(PAIR), radius=1.0)
    assert layout.prompt == "a red cube to the left of a blue sphere"
    assert [(r.prompt, r.obj, r.box.center) for r in layout.regions] == [
        ("a red cube", 0, (0.0, -0.42, 0.0)), ("a blue sphere", 1, (0.0, 0.42, 0.0))]


def test_parts_example_has_one_region_per_part_of_its_object():
    layout = load_layout(str(PARTS), radius=1.0)
    assert len(layout.objects) == 1
    assert [(r.prompt, r.obj) for r in layout.regions] == [("a yellow cylinder", 0), ("a purple cube", 0)]


def test_json_layout_reads_like_yaml(tmp_path):
    path = tmp_path / "pair.json"
    path.write_text(json.dumps(pair_data()))
    assert load_layout(str(path)) == load_layout(str(PAIR))
    assert parse_layout(load_layout(str(path)).to_dict()) == load_layout(str(path))


def broken(edit):
    data = copy.deepcopy(pair_data())
    edit(data)
    return data


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(colour="red"), "unknown key 'colour'"),
    (lambda d: d["objects"][1].update(rotation=3), "object 2: unknown key 'rotation'"),
    (lambda d: d["objects"][0].pop("prompt"), "object 1: missing prompt"),
    (lambda d: d.update(prompt="  "), "missing prompt"),
    (lambda d: d.update(objects=[]), "'objects' must be a non-empty list"),
    (lambda d: d["objects"][1].update(center=[0.0, 0.3, 0.0]),
     "object 1 ('a red cube') and object 2 ('a blue sphere') have overlapping boxes"),
    (lambda d: d["objects"][0].update(size=[0.8, 0.0, 0.8]), "object 1: degenerate box"),
    (lambda d: d["objects"][0].update(center=[0.0, 0.1]), "'center' must be three numbers"),
    (lambda d: d["objects"][0].update(yaw="left"), "'yaw' must be a number"),
    (lambda d: d["objects"][0].update(parts=[{"prompt": "a lid", "center": [0.0, -0.42, 0.5], "size": [0.2, 0.2, 0.2]}]),
     "object 1 part 1 ('a lid') reaches outside its object's box"),
    (lambda d: d["objects"][0].update(parts=[{"prompt": "a", "center": [0.0, -0.42, 0.0], "size": [0.4, 0.4, 0.4]},
                                             {"prompt": "b", "center": [0.0, -0.32, 0.0], "size": [0.4, 0.4, 0.4]}]),
     "object 1: part 1 ('a') and part 2 ('b') have overlapping boxes"),
    (lambda d: d["objects"][0].update(parts=[{"prompt": "a", "center": [0, -0.42, 0], "size": [0.2, 0.2, 0.2], "shape": 1}]),
     "object 1 part 1: unknown key 'shape'"),
])
def test_invalid_layouts_name_the_problem(edit, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        parse_layout(broken(edit), source="layout")
    assert info.value.hint


def test_boxes_must_fit_the_scene_cube_when_a_radius_is_given():
    data = broken(lambda d: d["objects"][1].update(center=[0.0, 0.7, 0.0]))
    parse_layout(data)  # no radius: no bound
    with pytest.raises(ConfigError, match="object 2 \\('a blue sphere'\\) reaches outside the scene cube"):
        parse_layout(data, radius=1.0)


def test_touching_boxes_are_allowed_and_share_no_point():
    data = broken(lambda d: [o.update(size=[0.84, 0.84, 0.84]) for o in d["objects"]])  # faces meet at y = 0
    layout = parse_layout(data)
    codes = layout.region_codes(torch.tensor([[0.0, 0.0, 0.0], [0.0, -1e-4, 0.0]]))
    assert codes.tolist() == [[0.0, 1.0], [1.0, 0.0]]


def test_region_codes_are_one_hot_inside_boxes_and_zero_outside():
    layout = load_layout(str(PARTS))
    points = torch.tensor([[0.0, 0.0, 0.5], [0.1, -0.3, -0.5], [0.0, 0.0, 0.9], [0.5, 0.0, 0.0], [0.0, 0.0, 0.0]])
    assert layout.region_codes(points).tolist() == [[1, 0], [0, 1], [0, 0], [0, 0], [0, 0]]


def test_holds_is_true_inside_any_objects_box_and_agrees_with_the_region_codes():
    layout = load_layout(str(PAIR))  # boxes of side 0.8 at y = -0.42 and +0.42
    points = torch.tensor([[0.0, -0.42, 0.0], [0.0, 0.42, 0.39], [0.0, 0.0, 0.0], [0.0, 0.42, 0.41], [0.5, 0.42, 0.0]])
    assert layout.holds(points).tolist() == [True, True, False, False, False]
    assert torch.equal(layout.holds(points), layout.region_codes(points).sum(-1) > 0)
    assert layout.objects[1].box.holds(points).tolist() == [False, True, False, False, False]


def test_separate_objects_have_density_only_inside_their_boxes_and_their_own_network_input():
    layout = load_layout(str(PAIR))
    field = build_scene(load_config(overrides=[f"layout.file={PAIR}", "layout.separate_objects=true"]), layout)["field"]
    points = torch.rand(4000, 3) * 2.0 - 1.0
    inside = layout.holds(points)
    cube, sphere = torch.tensor([[0.0, -0.42, 0.0]]), torch.tensor([[0.0, 0.42, 0.0]])
    with torch.no_grad():
        density = field.density(points)
        assert 0 < inside.sum() < len(points) and (density[~inside] == 0).all() and (density[inside] > 0).all()
        # The network reads the region code (one input per object): moving the sphere's input weights changes
        # the sphere's colour and leaves the cube's alone.
        assert field.network[0].in_features == field.encoding.n_output_dims + 2
        before = field(torch.cat([cube, sphere]))[1]
        field.network[0].weight[:, -1] += 1.0
        after = field(torch.cat([cube, sphere]))[1]
    assert torch.equal(after[0], before[0]) and not torch.allclose(after[1], before[1])


def test_view_angles_are_seen_from_the_object_centre_and_turned_by_its_yaw():
    data = broken(lambda d: d["objects"][0].update(yaw=90.0))
    cube, sphere = parse_layout(data).objects
    camera = torch.tensor([[2.0, 0.0, 0.0]])  # azimuth 0 from the origin
    elevation, azimuth = sphere.view_angles(camera)
    assert azimuth.item() == pytest.approx(-math.degrees(math.atan2(0.42, 2.0)), abs=1e-4)
    assert elevation.item() == pytest.approx(0.0, abs=1e-6)
    assert cube.view_angles(camera)[1].item() == pytest.approx(math.degrees(math.atan2(0.42, 2.0)) - 90.0, abs=1e-4)


def test_a_layout_gives_the_prompt_unless_one_is_given():
    assert load_config(overrides=[f"layout.file={PAIR}"]).prompt.text == "a red cube to the left of a blue sphere"
    assert load_config(prompt="a blue cube", overrides=[f"layout.file={PAIR}"]).prompt.text == "a blue cube"


@pytest.mark.parametrize("overrides, message", [
    (["layout.file=no/such/layout.yaml"], "layout.file: 'no/such/layout.yaml' does not exist"),
    ([f"layout.file={PAIR}", "objective.name=semantic", "prompt.perp_neg.enabled=true"], "does not combine with Perp-Neg"),
    (["objective.semantic.dilation=4"], "positive odd window"),
])
def test_config_errors_of_layouts_and_the_semantic_objective(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(prompt="a red cube", overrides=overrides)
