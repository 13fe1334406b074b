"""The built wheel: it carries the configs, the bundled prior and the CUDA sources, passes twine's
checks, and runs a short default job from a folder outside the checkout, with nothing of the checkout
on its path."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built from a copy of the checkout, so no earlier build/ folder leaks into it."""
    source, out = tmp_path_factory.mktemp("source") / "sds3d", tmp_path_factory.mktemp("dist")
    skip = shutil.ignore_patterns(".git", "build", "*.egg-info", "node_modules", "outputs", ".whl", "__pycache__", "prior-work")
    shutil.copytree(ROOT, source, symlinks=True, ignore=skip)
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)],
                   check=True, cwd=out)
    (path,) = out.glob("sds3d-*.whl")
    return path


def test_the_wheel_carries_configs_assets_and_cuda_sources_and_stays_small(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {p.name for p in (ROOT / "configs").glob("*.yaml")}
    assert {f"sds3d/configs/{name}" for name in shipped} <= names
    for part in ("unet/config.json", "unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors",
                 "tokenizer/tokenizer.json", "scheduler/scheduler_config.json", "model_index.json"):
        assert f"sds3d/assets/prior/{part}" in names
    assert "sds3d/assets/sd21-base/unet/config.json" in names and "sds3d/cuda/hashgrid.cu" in names
    assert {f"sds3d/assets/layouts/{p.name}" for p in (ROOT / "assets" / "layouts").iterdir()} <= names
    assert {"sds3d/assets/generator/config.yaml", "sds3d/assets/generator/generator.pt",
            "sds3d/assets/prompts/world-training-singles.txt"} <= names
    assert not any(n.startswith("sds3d/assets/readme/") for n in names)  # README's pictures stay in the repository
    assert wheel.stat().st_size < 20e6


def test_twine_accepts_the_wheel(wheel):
    result = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(wheel)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_the_installed_wheel_runs_a_default_job_from_another_folder(wheel, tmp_path):
    target, work = tmp_path / "site", tmp_path / "elsewhere"
    work.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)], check=True)
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run([sys.executable, "-c", "import sds3d; print(sds3d.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(target)), where  # the wheel's copy, not the checkout
    version = subprocess.run([str(target / "bin" / "sds3d"), "--version"], cwd=work, env=env, capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("sds3d "), version.stderr
    run = subprocess.run([str(target / "bin" / "sds3d"), "run", "a red cube", "train.steps=2", "train.val_every=0",
                          "export.video_frames=0", "export.resolution=32", "export.texture_resolution=128", "out_dir=out"],
                         cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert len(list((work / "out").glob("*/*.glb"))) == 1
