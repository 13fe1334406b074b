"""DreamPropeller's Picard iteration (train.picard): with threshold 0 it is the sequential run step for step; with a
large one it keeps whole windows and still recovers the shape on the exact guide; it resumes from a checkpoint
written between windows; a worker that dies stops the run with a clear error and its last checkpoint."""

import json
import multiprocessing

import pytest
import torch

from sds3d import api
from sds3d.bench.quality import exported_asset_iou
from sds3d.checkpoint import read_checkpoint
from sds3d.errors import ConfigError
from sds3d.picard import WorkerError
from sds3d.world.scenes import parse_caption

EXACT = ["train.picard.threshold=0", "train.picard.adapt=0"]


@pytest.fixture(scope="module")
def exact_run(small_run):
    """12 steps of ``small_run`` on the exact world guide, a checkpoint every 4."""
    return ["guide.model=exact:world", *small_run, "train.steps=12", "train.ckpt_every=4"]


def losses(run_dir):
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def scene_state(run_dir):
    return read_checkpoint(run_dir / "ckpt" / "last.pt")["scene"]


def assert_same_run(a, b):
    """Equal to float rounding: a worker's step runs on fewer threads than the run's, which may reorder sums."""
    assert losses(a) == pytest.approx(losses(b), rel=1e-5)
    sa, sb = scene_state(a), scene_state(b)
    assert all(torch.allclose(sa[k].float(), sb[k].float(), atol=1e-5) for k in sa)


@pytest.fixture(scope="module")
def sequential(tmp_path_factory, exact_run):
    """The ordinary loop with each step's draws keyed by its index (window 1), the run Picard must reproduce."""
    return api.generate("a red cube", None, [*exact_run, "train.picard.window=1"], run_dir=tmp_path_factory.mktemp("seq") / "run").run_dir


def test_threshold_zero_is_the_sequential_run_step_for_step(sequential, tmp_path, exact_run):
    picard = api.generate("a red cube", None, [*exact_run, "train.picard.window=2", *EXACT], run_dir=tmp_path / "run").run_dir
    assert len(losses(picard)) == 12
    assert_same_run(picard, sequential)


def test_vsd_lora_is_guessed_and_replayed_with_the_field(small_run, tiny_sd_dir, tmp_path):
    """The LoRA is part of the iterate: at threshold 0 its trained weights equal the sequential run's."""
    overrides = [f"guide.model={tiny_sd_dir}", *small_run, "train.steps=4", "scene.normals=finite_difference", *EXACT]
    runs = [api.generate("a hamburger", "prolificdreamer", [*overrides, f"train.picard.window={w}"], run_dir=tmp_path / str(w)).run_dir
            for w in (1, 2)]
    assert_same_run(*runs)
    lora = [read_checkpoint(run / "ckpt" / "last.pt")["objective"] for run in runs]
    assert lora[0] and all(torch.allclose(lora[0][k], lora[1][k], atol=1e-5) for k in lora[0])


def test_a_resume_between_windows_continues_the_same_run(sequential, tmp_path, exact_run):
    calls = iter(range(100))
    stop_after_two_windows = lambda: next(calls) >= 2  # noqa: E731 - asked before each window of one step
    overrides = [*exact_run, "train.picard.window=2", *EXACT]
    first = api.generate("a red cube", None, overrides, run_dir=tmp_path / "run", should_stop=stop_after_two_windows)
    assert first.interrupted and read_checkpoint(first.run_dir / "ckpt" / "last.pt")["step"] == 2
    resumed = api.resume(first.run_dir)
    assert resumed.steps == 12
    assert_same_run(resumed.run_dir, sequential)


def test_a_dead_worker_stops_the_run_with_its_last_checkpoint(tmp_path, exact_run):
    calls = iter(range(100))

    def kill_a_worker_at_the_fifth_window():
        if next(calls) == 5:
            multiprocessing.active_children()[0].kill()
        return False

    with pytest.raises(WorkerError, match="died"):
        api.generate("a red cube", None, [*exact_run, "train.picard.window=2", *EXACT], run_dir=tmp_path / "run",
                     should_stop=kill_a_worker_at_the_fifth_window)
    assert read_checkpoint(tmp_path / "run" / "ckpt" / "last.pt")["step"] == 4


@pytest.mark.slow
def test_a_large_threshold_keeps_whole_windows_and_recovers_the_shape(tmp_path):
    """Every window is kept whole (three steps per optimiser replay), and the run still makes the caption's shape
    with the exact guide (the sequential run reaches about 0.9 in 150 steps, test_exact_guide)."""
    overrides = ["guide.model=exact:world", "train.steps=150", "train.val_every=0", "export.video_frames=0", "export.texture=false",
                 "export.resolution=64", "train.picard.window=3", "train.picard.threshold=1e9", "train.picard.adapt=0"]
    run = api.generate("a yellow torus", None, overrides, run_dir=tmp_path / "run")
    cfg, scene = api.load_run(run.run_dir)
    assert exported_asset_iou(cfg, scene, parse_caption("a yellow torus"), rotations=12, resolution=32) >= 0.8


def test_an_amortized_run_refuses_picard(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red cube\na blue sphere\n")
    with pytest.raises(ConfigError, match="train.picard.window"):
        api.amortize(prompts, overrides=["guide.model=exact:world", "train.picard.window=2"], run_dir=tmp_path / "gen")
