"""Every shipped method config runs end to end on the tiny model; VSD's LoRA state survives a resume."""

import json

import pytest
import torch

from sds3d import api
from sds3d.config import shipped_configs
from sds3d.errors import ConfigError


@pytest.fixture(scope="module")
def small(small_run):
    """``small_run`` for 2 steps with finite-difference normals."""
    return [*small_run, "train.steps=2", "scene.normals=finite_difference"]


@pytest.mark.parametrize("name", [name for name in shipped_configs() if name != "amortize-gan"])
def test_shipped_config_runs_on_the_tiny_model(name, tiny_sd_dir, tmp_path, small):
    result = api.generate("a hamburger", name, [f"guide.model={tiny_sd_dir}", *small], run_dir=tmp_path / "run")
    assert result.steps == 2
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records)
    assert (result.run_dir / "mesh.glb").is_file()


def test_vsd_logs_and_trains_its_lora(tiny_sd_dir, tmp_path, small):
    result = api.generate("a hamburger", "prolificdreamer", [f"guide.model={tiny_sd_dir}", *small], run_dir=tmp_path / "run")
    record = json.loads((result.run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["loss/lora"] > 0
    state = torch.load(result.run_dir / "ckpt" / "last.pt", weights_only=False)["objective"]
    assert any("camera_embedding" in k for k in state) and any(k.startswith("lora.") for k in state)


def test_vsd_resume_continues_exactly(tiny_sd_dir, tmp_path, small):
    # a schedule in fractions of the run (base's uniform_mix) differs between a 2-step and a 4-step run by design
    overrides = [f"guide.model={tiny_sd_dir}", *small, "train.steps=4", "objective.uniform_mix=0.5"]
    straight = api.generate("a hamburger", "prolificdreamer", overrides, run_dir=tmp_path / "straight")
    first = api.generate("a hamburger", "prolificdreamer", [*overrides, "train.steps=2"], run_dir=tmp_path / "split")
    resumed = api.resume(first.run_dir, ["train.steps=4"])
    a, b = (torch.load(r.run_dir / "ckpt" / "last.pt", weights_only=False) for r in (straight, resumed))
    for part in ("scene", "objective"):
        for key in a[part]:
            torch.testing.assert_close(a[part][key], b[part][key], rtol=0, atol=1e-6, msg=f"{part}.{key}")


def test_the_gan_generator_config_is_refused_for_one_asset(tmp_path):
    with pytest.raises(ConfigError, match="amortize.mode gan"):
        api.generate("a red cube", "amortize-gan", run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()
