"""Semantic region SDS end to end on CPU: `sds3d run --layout` on the bundled prior writes a GLB; the
benchmark hands a semantic method (only) the layout of its prompt's true scene."""

import json

import pytest
import trimesh
from omegaconf import OmegaConf
from typer.testing import CliRunner

from sds3d.bench import quality
from sds3d.cli import app
from sds3d.config import ASSETS_DIR
from sds3d.layout import parse_layout
from sds3d.world.scenes import parse_caption

PAIR = ASSETS_DIR / "layouts" / "cube-left-of-sphere.yaml"


@pytest.fixture(scope="module")
def small(small_run):
    """``small_run`` for 4 steps, exported at 24."""
    return [*small_run, "train.steps=4", "export.resolution=24"]



def test_run_with_a_two_object_layout_writes_a_glb(tmp_path, small):
    run_dir = tmp_path / "runs"
    # Scene views only (the recipe zooms on one object most steps), so every step has a region map.
    result = CliRunner().invoke(app, ["run", "--layout", str(PAIR), *small, "layout.zoom_prob=0.0", f"out_dir={run_dir}"])
    assert result.exit_code == 0, result.output
    (folder,) = run_dir.iterdir()
    cfg = OmegaConf.load(folder / "config.yaml")
    assert cfg.objective.name == "semantic" and cfg.prompt.text == "a red cube to the left of a blue sphere"
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 4 and all(r["objective/region_coverage"] > 0 for r in records)
    mesh = trimesh.load(folder / "mesh.glb", force="mesh")
    assert len(mesh.faces) > 0


def test_world_layout_boxes_hold_each_object_and_stay_apart():
    scene = parse_caption("a red cube to the left of a blue sphere")
    layout = parse_layout(quality.world_layout(scene), radius=1.0)
    assert [o.prompt for o in layout.objects] == ["a red cube", "a blue sphere"]
    assert [o.box.center for o in layout.objects] == [obj.center for obj in scene.objects]


def test_bench_hands_only_a_semantic_method_the_true_layout(tmp_path):
    prompt = "a blue cube to the left of a red sphere"
    assert quality.prompt_set(prompt) == "compositional"
    assert quality.method_overrides("base", prompt, ["seed=1"], tmp_path) == ["seed=1"]
    overrides = quality.method_overrides("semantic", prompt, ["seed=1"], tmp_path)
    path = tmp_path / "layouts" / "a-blue-cube-to-the-left-of-a-red-sphere.json"
    assert overrides == ["seed=1", f"layout.file={path}"]
    assert [o["prompt"] for o in json.loads(path.read_text())["objects"]] == ["a blue cube", "a red sphere"]


def test_semantic_run_without_a_layout_fails_before_loading_the_guide(tmp_path):
    result = CliRunner().invoke(app, ["run", "a red cube", "objective.name=semantic", "guide.model=no/such/model", f"out_dir={tmp_path}"])
    assert result.exit_code != 0 and "needs a layout" in str(result.exception)
