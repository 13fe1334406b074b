"""The web app's parts without a browser: reading run folders, checking the form, the run queue."""

import json
import os
import re
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from PIL import Image

from sds3d.app.request import Knobs, RunRequest, build_request, config_choices, explain, knob_defaults
from sds3d.app.runs import format_seconds, loss_curve, read_metrics, read_progress, scan_runs
from sds3d.app.worker import FINISHED, RUNNING, STOPPED, Worker
from sds3d.errors import Sds3dError


def make_run(outputs: Path, name: str, prompt: str, objective: str = "sds", grids=(10,), metrics=(), files=()):
    run = outputs / name
    (run / "progress").mkdir(parents=True)
    OmegaConf.save({"prompt": {"text": prompt}, "objective": {"name": objective},
                    "guide": {"model": "/somewhere/assets/prior"}, "train": {"steps": 40}}, run / "config.yaml")
    for step in grids:
        Image.new("RGB", (6, 4)).save(run / "progress" / f"step-{step:05d}.png")
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics))
    for f in files:
        (run / f).write_bytes(b"x")
    return run


def test_gallery_lists_runs_newest_first_with_their_summary(tmp_path):
    make_run(tmp_path, "a-red-cube-20260101-120000", "a red cube", grids=(10, 20), metrics=[{"step": 20, "loss": 1.0}],
             files=["mesh.glb", "video.mp4"])
    make_run(tmp_path, "a-blue-cone-20260102-090000-2", "a blue cone", objective="csd")
    make_run(tmp_path, "no-grid-yet-20260103-000000", "a green torus", grids=())
    (tmp_path / "not-a-run").mkdir()
    runs = scan_runs(tmp_path)
    assert [r.prompt for r in runs] == ["a blue cone", "a red cube"]
    cone, cube = runs
    assert (cone.method, cone.model, cone.date) == ("csd", "prior", datetime(2026, 1, 2, 9, 0, 0))
    assert (cone.mesh, cone.video, cone.steps) == (None, None, 0)
    assert cube.thumbnail.name == "step-00020.png"
    assert (cube.mesh.name, cube.video.name, cube.steps, cube.total_steps) == ("mesh.glb", "video.mp4", 20, 40)
    assert cube.caption == "a red cube · sds on prior · 2026-01-01 12:00"


def test_gallery_shows_the_refined_mesh_of_a_two_stage_run(tmp_path):
    run = make_run(tmp_path, "r", "a red cube", files=["mesh.glb"])
    (run / "refine").mkdir()
    (run / "refine" / "mesh.glb").write_bytes(b"x")
    assert scan_runs(tmp_path)[0].mesh == run / "refine" / "mesh.glb"


def test_gallery_dates_a_folder_without_a_timestamp_by_its_config(tmp_path):
    run = make_run(tmp_path, "my-run", "a red cube")
    os.utime(run / "config.yaml", (0, 1_700_000_000))
    assert scan_runs(tmp_path)[0].date == datetime.fromtimestamp(1_700_000_000)


def test_gallery_of_a_missing_folder_is_empty(tmp_path):
    assert scan_runs(tmp_path / "nothing") == []


def test_metrics_skip_a_line_still_being_written_and_curve_has_each_loss_term(tmp_path):
    run = make_run(tmp_path, "r", "a red cube", metrics=[{"step": 5, "loss": 3.0, "loss/objective": 2.5, "loss/sparsity": 0.5,
                                                       "grad_norm": 9.0}])
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 10, "lo')
    records = read_metrics(run)
    assert [r["step"] for r in records] == [5]
    assert loss_curve(records) == [{"step": 5, "term": "loss", "value": 3.0},
                                   {"step": 5, "term": "objective", "value": 2.5},
                                   {"step": 5, "term": "sparsity", "value": 0.5}]


def test_progress_gives_step_loss_and_eta_from_the_last_record(tmp_path):
    run = make_run(tmp_path, "r", "a red cube", metrics=[{"step": 5, "loss": 9.0, "steps_per_s": 1.0},
                                                       {"step": 10, "loss": 0.5, "steps_per_s": 2.0}])
    progress = read_progress(run, total=40)
    assert (progress.step, progress.loss, progress.eta_s) == (10, 0.5, 15.0)
    assert progress.describe() == "step 10/40 · loss 0.5 · ETA 15 s"
    assert read_progress(tmp_path / "not-started", 40).describe() == "step 0/40"


@pytest.mark.parametrize("seconds, text", [(7.4, "7 s"), (125, "2 min 05 s"), (7260, "2 h 01 min")])
def test_eta_reads_as_hours_minutes_seconds(seconds, text):
    assert format_seconds(seconds) == text


def test_config_choices_are_shipped_names_then_extra_files(tiny_config, tmp_path):
    (tmp_path / "mine.yaml").write_text("defaults: [base]\n")
    tiny = Path(tiny_config)
    choices = config_choices([tmp_path, tiny])
    assert ("base", "base") in choices
    assert choices[-2:] == [(f"mine ({tmp_path})", str(tmp_path / "mine.yaml")), (f"tiny ({tiny.parent})", str(tiny))]


def test_knobs_default_to_the_config_and_a_scheduled_scale_stays_the_configs(tmp_path):
    assert knob_defaults("prolificdreamer") == Knobs("vsd", 400, 7.5, 0)
    assert knob_defaults("base") == Knobs("sds", 400, None, 0)  # base's scale falls over the run
    (tmp_path / "annealed.yaml").write_text("defaults: [base]\nobjective: {guidance_scale: [0, 100.0, 7.5, 500]}\n")
    assert knob_defaults(str(tmp_path / "annealed.yaml")).guidance_scale is None
    request = build_request("a red cube", str(tmp_path / "annealed.yaml"), Knobs("sds", 50, None, 3), tmp_path)
    assert list(request.cfg.objective.guidance_scale) == [0, 100.0, 7.5, 500]
    assert (request.cfg.train.steps, request.cfg.seed, request.cfg.out_dir) == (50, 3, str(tmp_path))


@pytest.mark.parametrize("prompt, knobs, message", [
    ("  ", Knobs("sds", 10, 7.5, 0), "the prompt is empty"),
    ("a purple dragon", Knobs("sds", 10, 7.5, 0), "does not know the word(s): dragon"),
    ("a red cube", Knobs("sds", 0, 7.5, 0), "train.steps must be positive, got 0"),
    ("a red cube", Knobs("sds", 10.5, 7.5, 0), "bad value for 'train.steps'"),
    ("a red cube", Knobs("nope", 10, 7.5, 0), "objective.name: unknown value 'nope'"),
    ("a red cube", Knobs("sds", 10**6, 7.5, 0), "more than the page runs"),
    ("a red cube", Knobs("sds", "many", 7.5, 0), "train.steps must be a number, got 'many'"),
    ("a red cube " * 40, Knobs("sds", 10, 7.5, 0), "the page takes at most 300"),
], ids=["empty", "vocabulary", "zero-steps", "fractional-steps", "objective", "too-many-steps", "non-numeric-steps", "long-prompt"])
def test_bad_form_input_is_a_message_naming_the_problem(tmp_path, prompt, knobs, message):
    with pytest.raises(Sds3dError) as info:
        build_request(prompt, "base", knobs, tmp_path)
    assert message in explain(info.value)


def test_hub_models_are_not_fetched_to_check_words(tmp_path):
    request = build_request("a purple dragon", "dreamfusion-sd", Knobs("sds", 10, None, 0), tmp_path)
    assert request.cfg.guide.model == "stabilityai/stable-diffusion-2-1-base"


def tiny_request(config: Path, outputs: Path, steps: int) -> RunRequest:
    return build_request("a red cube", str(config), Knobs("sds", steps, None, 0), outputs)


def wait_for(condition, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_worker_runs_a_queued_request_to_a_mesh(tmp_path, tiny_prior_config):
    worker = Worker()
    job = worker.submit(tiny_request(tiny_prior_config, tmp_path / "out", steps=6))
    wait_for(lambda: job.done)
    worker.shutdown()
    assert job.state == FINISHED, job.message
    assert job.run_dir.parent == tmp_path / "out" and (job.run_dir / "mesh.glb").is_file()
    assert read_progress(job.run_dir, 6).step == 6


def test_stop_cancels_a_queued_run_and_ends_a_running_one_with_checkpoint_and_mesh(tmp_path, tiny_prior_config):
    config = tiny_prior_config
    worker = Worker()
    running = worker.submit(tiny_request(config, tmp_path / "out", steps=10_000))
    queued = worker.submit(tiny_request(config, tmp_path / "out", steps=6))
    assert worker.ahead_of(queued) == 1 and worker.current() is running
    worker.stop(queued.id)
    assert (queued.state, queued.message) == (STOPPED, "before it started")
    wait_for(lambda: running.run_dir is not None and read_progress(running.run_dir, 10_000).step > 0)
    worker.stop(running.id)
    wait_for(lambda: running.done)
    worker.shutdown()
    assert running.state == STOPPED and re.fullmatch(r"at step \d+", running.message)
    assert (running.run_dir / "ckpt" / "last.pt").is_file() and (running.run_dir / "mesh.glb").is_file()
    assert queued.run_dir is None and [p.name for p in (tmp_path / "out").iterdir()] == [running.run_dir.name]


def test_app_without_gradio_says_how_to_get_it(monkeypatch, capsys):
    from sds3d.cli import main

    monkeypatch.setitem(sys.modules, "gradio", None)  # makes `import gradio` raise ImportError
    monkeypatch.setattr(sys, "argv", ["sds3d", "app"])
    with pytest.raises(SystemExit) as info:
        main()
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert "needs gradio" in err and "pip install -e '.[app]'" in err


def test_the_page_number_fields_reject_text_with_a_message():
    import gradio as gr

    from sds3d.app.page import checked_number

    field = checked_number(label="Steps", precision=0, minimum=1, maximum=10)
    with pytest.raises(gr.Error, match="Steps must be a number, got 'abc'"):
        field.preprocess("abc")
    assert field.preprocess(6) == 6


def test_a_full_queue_refuses_more_runs_with_a_message(tmp_path, tiny_prior_config):
    from sds3d.app.worker import MAX_WAITING

    worker = Worker()
    config = tiny_prior_config
    try:
        jobs = [worker.submit(tiny_request(config, tmp_path / "out", steps=10_000))]
        wait_for(lambda: jobs[0].state == RUNNING)
        jobs += [worker.submit(tiny_request(config, tmp_path / "out", steps=10_000)) for _ in range(MAX_WAITING)]
        with pytest.raises(Sds3dError, match="the queue is full"):
            worker.submit(tiny_request(config, tmp_path / "out", steps=6))
    finally:
        worker.shutdown()
    assert all(job.done for job in jobs)
