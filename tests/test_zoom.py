"""Zoomed object views of a layout (layout.zoom_prob): cameras framing one object as a single object is
framed, the field seen through that object's box, the object's own prompt, and a run that uses them."""

import json
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from sds3d import api
from sds3d.cameras import make_cameras
from sds3d.cli import app
from sds3d.config import ASSETS_DIR, load_config
from sds3d.errors import ConfigError
from sds3d.guides.prompts import PromptSet, view_prompt
from sds3d.layout import load_layout, parse_layout
from sds3d.layout.zoom import IsolatedField, zoomed_cameras
from sds3d.render.background import Background
from sds3d.render.volume import VolumeRenderer
from sds3d.train import pick_zoomed_region
from test_refine import REFINE
from test_semantic import EmbedGuide, TwoBlobs

PAIR = ASSETS_DIR / "layouts" / "cube-left-of-sphere.yaml"  # boxes of side 0.8 centred at y = -0.42 and +0.42


def test_zoomed_cameras_look_at_the_box_from_the_same_direction_at_a_scaled_distance():
    cube = load_layout(str(PAIR)).objects[0]
    cameras = make_cameras(torch.tensor([20.0, 0.0]), torch.tensor([30.0, -90.0]), torch.tensor([2.0, 1.5]),
                           torch.tensor([50.0, 40.0]), 8, 8)
    zoomed = zoomed_cameras(cameras, cube.box, frame=1.6)  # scale 0.8 / 1.6 = 0.5
    centre = torch.tensor(cube.box.center)
    torch.testing.assert_close(zoomed.position - centre, 0.5 * cameras.position)
    torch.testing.assert_close(zoomed.c2w[:, :3, :3], cameras.c2w[:, :3, :3])  # same orientation: looks at the centre
    torch.testing.assert_close(zoomed.light_position - centre, 0.5 * cameras.light_position)
    # What the guide is told stays the single-object view: angles, distance and field of view in object units.
    for name in ("elevation", "azimuth", "distance", "fovy"):
        assert torch.equal(getattr(zoomed, name), getattr(cameras, name))


def test_an_isolated_field_renders_its_object_alone_filling_the_frame_as_a_single_object_would():
    layout = load_layout(str(PAIR))
    settings = SimpleNamespace(samples=96, importance_samples=0, chunk=4096, ambient=0.1, diffuse=0.9,
                               light="point", headlight_lift=0.6, deferred_shading=False)
    renderer = VolumeRenderer(settings, 1.0)
    background = Background(SimpleNamespace(kind="solid", color=[1.0, 1.0, 1.0], frequencies=4, mlp_width=16))
    # A side view (from -y) looks along the pair: the cube's blob is in front of the sphere's, both at the centre.
    side = make_cameras(torch.zeros(1), torch.tensor([-90.0]), torch.tensor([2.0]), torch.tensor([40.0]), 16, 16)
    blobs = TwoBlobs(layout)
    with torch.no_grad():
        scene = renderer.render(blobs, background, side)
        sphere_alone = renderer.render(IsolatedField(blobs, layout.objects[1].box), background,
                                       zoomed_cameras(side, layout.objects[1].box, frame=1.2))
    assert scene.semantic[0, 8, 8].argmax() == 0  # the cube hides the sphere
    assert sphere_alone.semantic[0, 8, 8].tolist() == pytest.approx([0.0, 1.0], abs=1e-4)  # the cube is gone
    assert sphere_alone.semantic[..., 0].sum() == 0
    # Zoomed by 0.8 / 1.2 the blob covers about (1.5)^2 the pixels it covers in an unzoomed view of the scene.
    front = make_cameras(torch.zeros(1), torch.zeros(1), torch.tensor([2.0]), torch.tensor([40.0]), 16, 16)
    with torch.no_grad():
        unzoomed = renderer.render(blobs, background, front).semantic[0, ..., 1].gt(0.5).sum()
    assert sphere_alone.opacity.gt(0.5).sum() / unzoomed == pytest.approx(1.5**2, rel=0.25)


def test_isolation_zeroes_density_outside_the_box_only_and_keeps_the_fields_occupancy():
    box = load_layout(str(PAIR)).objects[0].box  # [-0.4, 0.4] x [-0.82, -0.02] x [-0.4, 0.4]
    field = SimpleNamespace(occupied=lambda p: p[:, 2] < 0.3,
                            query=lambda p, with_normals: (torch.ones(len(p)), torch.zeros(len(p), 3), None))
    isolated = IsolatedField(field, box)
    points = torch.tensor([[0.0, -0.42, 0.0], [0.0, 0.42, 0.0], [0.0, -0.42, 0.35]])
    assert isolated.query(points, False)[0].tolist() == [1.0, 0.0, 1.0]
    assert isolated.occupied(points).tolist() == [True, False, False]


def test_region_conditions_carry_the_regions_own_prompt_with_the_view_of_its_objects_frame():
    layout = load_layout(str(PAIR))
    prompts = PromptSet(EmbedGuide(), load_config(overrides=[f"layout.file={PAIR}"]).prompt, layout)
    camera = make_cameras(torch.zeros(1), torch.tensor([170.0]), torch.tensor([1.5]), torch.tensor([50.0]), 8, 8)
    conditions = prompts.region_conditions(zoomed_cameras(camera, layout.objects[1].box, 1.2), 1)
    assert conditions.labels == ["back"] and conditions.regions is None
    assert torch.equal(conditions.cond[0], prompts.embeddings[view_prompt("a blue sphere", "back")])
    assert torch.equal(conditions.no_view[0], prompts.embeddings["a blue sphere"])


def test_a_part_is_zoomed_on_under_its_own_prompt_seen_in_its_objects_turned_frame():
    layout = parse_layout({"prompt": "a yellow cylinder on top of a purple cube", "objects": [
        {"prompt": "a yellow cylinder on top of a purple cube", "center": [0.0, 0.0, 0.0], "size": [0.8, 0.8, 1.64],
         "yaw": 90.0, "parts": [{"prompt": "a yellow cylinder", "center": [0.0, 0.0, 0.42], "size": [0.8, 0.8, 0.8]},
                                {"prompt": "a purple cube", "center": [0.0, 0.0, -0.42], "size": [0.8, 0.8, 0.8]}]}]})
    prompts = PromptSet(EmbedGuide(), load_config(overrides=[f"layout.file={PAIR}"]).prompt, layout)
    # Level with the cylinder from +y: azimuth 90 in the scene, 0 (front) in the object's frame turned by 90.
    camera = make_cameras(torch.zeros(1), torch.tensor([90.0]), torch.tensor([1.5]), torch.tensor([50.0]), 8, 8)
    conditions = prompts.region_conditions(zoomed_cameras(camera, layout.regions[0].box, 1.2), 0)
    assert conditions.labels == ["front"]
    assert torch.equal(conditions.cond[0], prompts.embeddings[view_prompt("a yellow cylinder", "front")])


def zoom_session(prob: str):
    cfg = load_config(overrides=[f"layout.file={PAIR}", "train.steps=10", f"layout.zoom_prob={prob}"])
    return SimpleNamespace(prompts=SimpleNamespace(layout=load_layout(str(PAIR))), isolate=IsolatedField, cfg=cfg)


@pytest.mark.parametrize("prob", ["0.0", "[0.5,0.0,1.0,1.0]"])  # off, and off until half the run
def test_zoom_off_draws_no_random_number(prob):
    state = torch.get_rng_state()
    assert pick_zoomed_region(zoom_session(prob), step=2) is None
    assert torch.equal(torch.get_rng_state(), state)  # runs without zoom keep their random stream


def test_zoom_on_draws_every_region():
    session = zoom_session("1.0")
    assert {pick_zoomed_region(session, step) for step in range(40)} == {0, 1}


def test_a_run_of_separate_objects_and_zoomed_views_only_writes_a_glb_and_loads_back(small_run, tmp_path):
    run_dir = tmp_path / "runs"
    result = CliRunner().invoke(app, ["run", "--layout", str(PAIR), *small_run, "train.steps=6", "export.resolution=24",
                                      "layout.zoom_prob=1.0", "layout.separate_objects=true", f"out_dir={run_dir}"])
    assert result.exit_code == 0, result.output
    (folder,) = run_dir.iterdir()
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    # A zoomed view has no region map: the semantic objective sees no region there.
    assert len(records) == 6 and all(r["objective/region_coverage"] == 0 for r in records)
    assert (folder / "mesh.glb").stat().st_size > 0
    _, scene = api.load_run(folder)  # the field reads the layout's region codes again
    assert scene["field"].separate and scene["field"].network[0].in_features == scene["field"].encoding.n_output_dims + 2
    # The mesh stage's texture copies that network, region inputs and all, and resumes from its checkpoint.
    api.refine(folder, overrides=REFINE)
    assert api.refine(folder, overrides=["refine.steps=4"], resume=True).steps == 4


def test_zoom_prob_outside_zero_to_one_is_a_config_error():
    with pytest.raises(ConfigError, match="layout.zoom_prob"):
        load_config(overrides=[f"layout.file={PAIR}", "layout.zoom_prob=1.5"])
