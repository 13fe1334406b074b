"""Whole runs on the tiny model: prompt to GLB, resume, re-export, interruption, non-finite stop."""

import json
import subprocess
import sys

import pytest
import torch
import trimesh

from sds3d import api
from sds3d.errors import NonFiniteError
from sds3d.objectives.sds import SDS


@pytest.fixture
def run_tiny(tiny_config, tiny_sd_dir):
    """Runs "a hamburger" on tiny.yaml and the tiny SD model: ``run_tiny(run_dir, *overrides)``."""
    return lambda run_dir, *overrides: api.generate("a hamburger", tiny_config, [f"guide.model={tiny_sd_dir}", *overrides],
                                                    run_dir=run_dir)


def test_run_writes_glb_with_faces_and_texture(run_tiny, tmp_path):
    result = run_tiny(tmp_path / "run")
    mesh = trimesh.load(result.run_dir / "mesh.glb", force="mesh")
    assert len(mesh.faces) > 0 and isinstance(mesh.visual, trimesh.visual.TextureVisuals)
    assert mesh.visual.uv.shape == (len(mesh.vertices), 2) and mesh.visual.material.baseColorTexture is not None
    (plain,) = api.export(result.run_dir, ["glb"], overrides=["export.texture=false"])
    coloured = trimesh.load(plain, force="mesh")
    assert coloured.visual.vertex_colors.shape == (len(coloured.vertices), 4)
    assert result.steps == 20


def test_run_folder_layout(run_tiny, tmp_path):
    run_dir = run_tiny(tmp_path / "run").run_dir
    for name in ("config.yaml", "ckpt/last.pt", "progress/step-00010.png", "progress/step-00020.png",
                 "mesh.obj", "mesh.ply", "video.mp4"):
        assert (run_dir / name).is_file(), name
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [5, 10, 15, 20]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records)
    assert not list(run_dir.rglob("*.tmp*")), "no temporary files left behind"


def _scene_state(run_dir):
    return torch.load(run_dir / "ckpt" / "last.pt", weights_only=False)["scene"]


def test_resume_continues_exactly(run_tiny, tmp_path):
    # a schedule in fractions of the run (base's uniform_mix) differs between a 10-step and a 20-step run by design
    constant_mix = "objective.uniform_mix=0.5"
    straight = run_tiny(tmp_path / "straight", constant_mix)
    first = run_tiny(tmp_path / "split", "train.steps=10", constant_mix)
    assert first.steps == 10
    resumed = api.resume(first.run_dir, ["train.steps=20"])
    assert resumed.steps == 20
    a, b = _scene_state(straight.run_dir), _scene_state(resumed.run_dir)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)


def test_export_reexports_from_checkpoint(run_tiny, tmp_path):
    run_dir = run_tiny(tmp_path / "run", "export.formats=[glb]").run_dir
    paths = api.export(run_dir, ["obj", "ply"], resolution=24)
    assert [p.name for p in paths] == ["mesh.obj", "mesh.ply"]
    assert len(trimesh.load(paths[1], force="mesh").faces) > 0


def test_interrupt_saves_checkpoint_and_exports(run_tiny, tmp_path, monkeypatch):
    calls = {"n": 0}
    original = SDS.forward

    def forward(self, *args):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(SDS, "forward", forward)
    result = run_tiny(tmp_path / "run")
    assert result.interrupted and result.steps == 5
    assert torch.load(result.run_dir / "ckpt" / "last.pt", weights_only=False)["step"] == 5
    assert (result.run_dir / "mesh.glb").is_file()


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(run_tiny, tmp_path, monkeypatch):
    original = SDS.forward

    def forward(self, guide, x, conditions, step):
        out = original(self, guide, x, conditions, step)
        if step == 13:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(SDS, "forward", forward)
    with pytest.raises(NonFiniteError, match="step 13"):
        run_tiny(tmp_path / "run")
    assert torch.load(tmp_path / "run" / "ckpt" / "last.pt", weights_only=False)["step"] == 10


def test_cli_run_prompt_to_glb(tiny_config, tiny_sd_dir, tmp_path):
    cmd = [sys.executable, "-c", "from sds3d.cli import main; main()", "run", "a hamburger", "--config", tiny_config,
           f"guide.model={tiny_sd_dir}", f"out_dir={tmp_path}", "train.steps=4", "export.video_frames=0"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    (run_dir,) = tmp_path.glob("a-hamburger-*")
    assert (run_dir / "mesh.glb").is_file()
    assert "mesh.glb" in done.stdout
