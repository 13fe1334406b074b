"""Runs that lose nothing: run folders claimed exclusively, SIGTERM (to a run or to the app) and a Ctrl-C
behind a closed pipe all end in a checkpoint and an export, a failed resume writes nothing, a killed
run's temporaries and repeated metrics are cleaned on resume, and a checkpoint survives kill -9 during
its writes."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from sds3d import api
from sds3d.checkpoint import read_checkpoint
from sds3d.config import load_config
from sds3d.errors import CheckpointError, ConfigError


@pytest.fixture(scope="module")
def fast(small_run):
    """``small_run`` with a coarser, untextured export."""
    return [*small_run, "export.resolution=24", "export.texture=false"]


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path, monkeypatch):
    monkeypatch.setattr(time, "strftime", lambda fmt: "20261202-120000")
    cfg = load_config(prompt="a red cube", overrides=[f"out_dir={tmp_path}"])
    claimed, barrier = [], threading.Barrier(8)

    def claim():
        barrier.wait()
        claimed.append(api.new_run_dir(cfg))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(claimed)) == 8 and all(path.is_dir() for path in claimed)
    expected = ["a-red-cube-20261202-120000"] + [f"a-red-cube-20261202-120000-{n}" for n in range(2, 9)]
    assert sorted(p.name for p in claimed) == sorted(expected)


def test_an_out_dir_that_cannot_be_written_is_a_config_error(tmp_path):
    (tmp_path / "a-file").write_text("")
    cfg = load_config(prompt="a red cube", overrides=[f"out_dir={tmp_path / 'a-file' / 'runs'}"])
    with pytest.raises(ConfigError, match="cannot create a run folder in out_dir"):
        api.new_run_dir(cfg)


def start_run(out_dir: Path, overrides, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) -> subprocess.Popen:
    """A long CLI run in a subprocess; returns once it has logged its first step."""
    cmd = [sys.executable, "-c", "from sds3d.cli import main; main()", "run", "a red cube", "train.steps=100000",
           "train.log_every=1", "train.ckpt_every=0", f"out_dir={out_dir}", *overrides]
    process = subprocess.Popen(cmd, stdout=stdout, stderr=stderr)
    deadline = time.monotonic() + 180
    while not list(out_dir.glob("*/metrics.jsonl")) or not list(out_dir.glob("*/metrics.jsonl"))[0].read_text():
        assert process.poll() is None and time.monotonic() < deadline, "the run never reached its first step"
        time.sleep(0.2)
    return process


def assert_saved_and_exported(out_dir: Path) -> None:
    (run_dir,) = out_dir.iterdir()
    assert read_checkpoint(run_dir / "ckpt" / "last.pt")["step"] >= 1
    assert (run_dir / "mesh.glb").stat().st_size > 0


@pytest.mark.slow
def test_sigterm_checkpoints_and_exports(tmp_path, fast):
    process = start_run(tmp_path, fast)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 130  # interrupted, as after Ctrl-C
    assert_saved_and_exported(tmp_path)


@pytest.mark.slow
def test_ctrl_c_with_the_output_pipe_closed_still_checkpoints_and_exports(tmp_path, fast):
    process = start_run(tmp_path, fast, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # as `sds3d run ... | tee log` when Ctrl-C has already ended tee
    process.stderr.close()
    process.send_signal(signal.SIGINT)
    process.wait(timeout=120)
    assert_saved_and_exported(tmp_path)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, fast) -> Path:
    """A 4-step run with a checkpoint at step 2 and at the end."""
    out_dir = tmp_path_factory.mktemp("runs")
    overrides = ["train.steps=4", "train.ckpt_every=2", "train.log_every=1", f"out_dir={out_dir}", *fast]
    return api.generate("a red cube", overrides=overrides).run_dir


def copy_run(run_dir: Path, to: Path) -> Path:
    import shutil

    return Path(shutil.copytree(run_dir, to))


def test_a_failed_resume_writes_nothing(finished_run, tmp_path):
    run_dir = copy_run(finished_run, tmp_path / "run")
    ckpt = run_dir / "ckpt" / "last.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])  # truncated
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    with pytest.raises(CheckpointError, match="cannot read the checkpoint"):
        api.resume(run_dir, ["train.steps=6"])
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
    with pytest.raises(CheckpointError):
        api.export(run_dir)
    with pytest.raises(CheckpointError):
        api.refine(run_dir)


def test_resuming_under_another_objective_says_what_changed(finished_run, tmp_path):
    run_dir = copy_run(finished_run, tmp_path / "run")
    config = run_dir / "config.yaml"
    config.write_text(config.read_text().replace("name: sds", "name: nfsd", 1))
    with pytest.raises(CheckpointError, match="objective.name: sds -> nfsd"):
        api.resume(run_dir, ["train.steps=6"])


def test_resume_cleans_temporaries_and_repeated_metrics(finished_run, tmp_path):
    run_dir = copy_run(finished_run, tmp_path / "run")
    stale = run_dir / "ckpt" / ".last.0badf00d.tmp.pt"
    stale.write_bytes(b"half a checkpoint")
    metrics = run_dir / "metrics.jsonl"
    # As if killed after logging steps 5 and 6 but before their checkpoint, mid-line.
    metrics.write_text(metrics.read_text() + '{"step": 5}\n{"step": 6}\n{"step": 7, "lo')
    api.resume(run_dir, ["train.steps=6"])
    assert not stale.exists()
    assert [json.loads(line)["step"] for line in metrics.read_text().splitlines()] == [1, 2, 3, 4, 5, 6]


KILLED_WRITER = """
import sys, torch, torch.nn as nn
from sds3d.checkpoint import save_checkpoint
scene = nn.ModuleDict({"field": nn.Linear(512, 512)})
step = 0
while True:
    step += 1
    save_checkpoint(sys.argv[1], step, scene)
"""


def test_kill_minus_nine_during_checkpoint_writes_leaves_a_readable_checkpoint(tmp_path):
    from sds3d.atomic import remove_stale_temporaries

    path, rng = tmp_path / "ckpt" / "last.pt", random.Random(0)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for _ in range(6):
        writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path)], env=env)
        while not path.exists():
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.3))
        writer.kill()
        writer.wait()
        payload = read_checkpoint(path)  # the last complete write, never a torn one
        assert payload["step"] >= 1 and payload["scene"]["field.weight"].shape == torch.Size([512, 512])
    remove_stale_temporaries(path.parent)
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


@pytest.mark.slow
def test_sigterm_to_the_app_stops_its_run_with_a_checkpoint_and_an_export(tmp_path, tiny_prior_config):
    """`sds3d app` in a subprocess, a run asked for through its HTTP API, then SIGTERM to the server."""
    pytest.importorskip("gradio")
    from gradio_client import Client

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config, out = tiny_prior_config, tmp_path / "out"
    server = subprocess.Popen([sys.executable, "-c", "from sds3d.cli import main; main()", "app", "--port", str(port),
                               "--outputs", str(out), "--configs", str(config)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
                break
            except Exception:  # not listening yet
                assert server.poll() is None and time.monotonic() < deadline, "the app never came up"
                time.sleep(0.5)
        client.predict("a red cube", str(config.resolve()), "sds", 10_000, None, 0, api_name="/on_run")
        while not list(out.glob("*/metrics.jsonl")) or not list(out.glob("*/metrics.jsonl"))[0].read_text():
            assert server.poll() is None and time.monotonic() < deadline + 120, "the run never reached its first step"
            time.sleep(0.2)
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)
    finally:
        if server.poll() is None:
            server.kill()
    assert_saved_and_exported(out)
