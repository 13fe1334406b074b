"""The shipped prior in assets/prior: the default guide, loaded offline through the pixel guide path."""

import subprocess
import sys

import torch
import trimesh

from sds3d import api
from sds3d.config import ASSETS_DIR, load_config
from sds3d.guides import load_guide
from sds3d.guides.pixel import PixelGuide
from sds3d.world.scenes import vocabulary


def test_default_config_uses_the_shipped_prior(tmp_path):
    cfg = load_config(prompt="a red cube", overrides=[f"guide.cache_dir={tmp_path}"])
    guide = load_guide(cfg.guide, torch.device("cpu"))
    assert isinstance(guide, PixelGuide) and guide.model == str(ASSETS_DIR / "prior")
    assert guide.resolution == 32 and guide.view_aware  # v3 knows each view's camera
    assert cfg.render.width == cfg.render.height == guide.resolution  # training renders at the guide's own size
    assert guide.embed(["a red cube, front view"]).shape[0] == 1


def test_shipped_prior_knows_every_world_word():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ASSETS_DIR / "prior" / "tokenizer")
    assert set(vocabulary()) <= set(tokenizer.get_vocab())


def test_default_run_writes_a_glb(tmp_path):
    result = api.generate("a red cube", None, ["train.steps=3", "export.video_frames=0", "export.resolution=32",
                                               "train.val_resolution=32", f"guide.cache_dir={tmp_path}"], run_dir=tmp_path / "run")
    assert len(trimesh.load(result.run_dir / "mesh.glb", force="mesh").faces) > 0


def test_unknown_word_is_named_with_a_way_out(tmp_path):
    cmd = [sys.executable, "-c", "from sds3d.cli import main; main()", "run", "a hamburger", f"out_dir={tmp_path}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "hamburger" in done.stderr and "cube" in done.stderr and "dreamfusion-sd" in done.stderr
    assert "Traceback" not in done.stderr
    assert not list(tmp_path.iterdir()), "nothing is written for a prompt the model cannot read"


def test_negative_prompt_words_the_prior_never_saw_are_left_out(tmp_path, caplog):
    cfg = load_config(prompt="a red cube", overrides=[f"guide.cache_dir={tmp_path}"])
    guide = load_guide(cfg.guide, torch.device("cpu"))
    # The degradation vocabulary is known (prior v2); words outside it and the world are dropped, named.
    assert guide.known_words_only("blue, blurry, low quality, cube") == "blue, blurry, low quality, cube"
    assert guide.known_words_only("photorealistic, noisy, 8k") == "noisy"
    assert guide.known_words_only("a green torus") == "a green torus"
    assert "photorealistic" in caplog.text and "8k" in caplog.text


def test_method_configs_with_paper_negative_prompts_run_on_the_prior(tmp_path, caplog):
    """nfsd.yaml carries the paper's negative prompt: the prior reads every word of it."""
    result = api.generate("a red cube", "nfsd", ["train.steps=2", "export.video_frames=0", "export.resolution=32",
                                                 "train.val_every=0", "train.val_resolution=16", f"guide.cache_dir={tmp_path}"],
                          run_dir=tmp_path / "run")
    assert result.steps == 2
    assert "does not know" not in caplog.text
