"""`sds3d batch`: prompts files and their errors, the index, worker plans (no Ray), then whole batches of
the tiny model on one local Ray session with two workers (finish, skip on rerun, retry faults, resume)."""

import json
import os
import sys
from pathlib import Path

import pytest
import torch
import trimesh

from sds3d import api
from sds3d.batch.index import BatchIndex
from sds3d.batch.jobs import Job, read_jobs
from sds3d.batch.runner import Workers, plan_cluster, plan_local, ray_session, run_batch
from sds3d.batch.worker import run_job
from sds3d.cli import main
from sds3d.errors import ConfigError

QUICK = ["train.steps=4", "train.val_every=0", "export.formats=[glb]", "export.video_frames=0"]


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_text_file_is_one_job_a_line_without_blanks_and_comments(tmp_path):
    path = write(tmp_path, "prompts.txt", "# a small library\na red cube\n\n  a blue sphere  \n# end\n")
    jobs = read_jobs(path, None, ["train.steps=7"])
    assert [(j.name, j.prompt, j.overrides) for j in jobs] == [
        ("001-a-red-cube", "a red cube", ("train.steps=7",)), ("002-a-blue-sphere", "a blue sphere", ("train.steps=7",))]


def test_yaml_entries_carry_their_own_config_overrides_and_seed(tmp_path):
    path = write(tmp_path, "prompts.yaml", "- a red cube\n"
                 "- {prompt: a blue sphere, seed: 3, config: csd, overrides: [train.steps=9]}\n"
                 "- {prompt: a green cone, overrides: {objective.guidance_scale: 50, export.formats: [glb]}}\n")
    jobs = read_jobs(path, "sjc", ["train.steps=7"])
    assert jobs[0] == Job(1, "a red cube", "sjc", ("train.steps=7",))
    assert jobs[1] == Job(2, "a blue sphere", "csd", ("train.steps=7", "train.steps=9", "seed=3"))
    assert jobs[2].overrides == ("train.steps=7", "objective.guidance_scale=50", 'export.formats=["glb"]')


def test_json_list_and_a_relative_config_path_that_workers_can_find(tiny_config, tmp_path, monkeypatch):
    monkeypatch.chdir(Path(tiny_config).parent)
    path = write(tmp_path, "prompts.json", '["a red cube", {"prompt": "a blue sphere", "config": "tiny.yaml"}]')
    jobs = read_jobs(path)
    assert [j.prompt for j in jobs] == ["a red cube", "a blue sphere"]
    assert jobs[1].config == str(Path(tiny_config).resolve())


@pytest.mark.parametrize("name, text, message", [
    ("p.yaml", "- a red cube\n- {prompt: a cube, steps: 3}\n", "entry 2: unknown key 'steps'"),
    ("p.yaml", "- a red cube\n- {seed: 3}\n", "entry 2: no prompt"),
    ("p.yaml", "- {prompt: a cube, seed: three}\n", "entry 1: seed must be an integer"),
    ("p.yaml", "- {prompt: a cube, overrides: train.steps=3}\n", "entry 1: overrides must be a list"),
    ("p.yaml", "- {prompt: a cube, overrides: [train.stpes=3]}\n", "entry 1 ('a cube'): unknown config key 'train.stpes'"),
    ("p.yaml", "- {prompt: a cube, config: no-such-config}\n", "entry 1 ('a cube'): config file 'no-such-config' does not exist"),
    ("p.yaml", "- [a, cube]\n", "entry 1: expected a prompt or a mapping"),
    ("p.yaml", "prompt: a cube\n", "must hold a list of entries, got a dict"),
    ("p.json", '["a cube",', "cannot read prompts file"),
    ("p.txt", "# only a comment\n\n", "has no prompts"),
], ids=["unknown-key", "no-prompt", "bad-seed", "bad-overrides", "bad-config-key", "missing-config", "not-a-mapping",
        "not-a-list", "bad-json", "empty"])
def test_bad_entries_fail_before_any_job_starts_naming_the_entry(tmp_path, name, text, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_jobs(write(tmp_path, name, text))


def test_a_bad_override_names_the_line_of_the_first_prompt(tmp_path):
    path = write(tmp_path, "prompts.txt", "# library\na red cube\n")
    with pytest.raises(ConfigError, match=r"line 2 \('a red cube'\): train.steps must be positive"):
        read_jobs(path, None, ["train.steps=0"])


def test_local_plan_splits_the_cores_between_cpu_workers():
    assert plan_local(2, gpus=0, cpus=2) == Workers(2, 1, {"num_cpus": 1})
    assert plan_local(None, gpus=0, cpus=8) == Workers(1, 8, {"num_cpus": 1})
    assert plan_local(3, gpus=0, cpus=2) == Workers(3, 1, {"num_cpus": 1})


def test_local_plan_gives_one_worker_per_gpu_and_shares_gpus_beyond_that():
    assert plan_local(None, gpus=4, cpus=16) == Workers(4, 4, {"num_cpus": 1, "num_gpus": 1.0})
    assert plan_local(8, gpus=4, cpus=16).task_options["num_gpus"] == 0.5


def test_cluster_plan_takes_one_gpu_per_job_and_needs_gpus():
    assert plan_cluster(None, {"CPU": 64.0, "GPU": 8.0}, "auto") == Workers(8, 8, {"num_cpus": 1, "num_gpus": 1})
    with pytest.raises(ConfigError, match="'ray://head:10001' has no GPUs"):
        plan_cluster(2, {"CPU": 64.0}, "ray://head:10001")


def test_index_reopens_finished_jobs_and_reruns_one_whose_glb_is_gone(tmp_path):
    jobs = [Job(1, "a cube", None, ()), Job(2, "a ball", None, ())]
    index = BatchIndex.open(tmp_path, jobs)
    assert [r.status for r in index.records.values()] == ["pending", "pending"]
    for name in ("001-a-cube", "002-a-ball"):
        glb = tmp_path / name / "mesh.glb"
        glb.parent.mkdir()
        glb.write_bytes(b"glTF")
        index.update(name, status="done", outputs=[str(glb)], glb=str(glb))
    (tmp_path / "002-a-ball" / "mesh.glb").unlink()
    reopened = BatchIndex.open(tmp_path, [*jobs, Job(3, "a cone", None, ())])
    assert reopened["001-a-cube"].finished() and not reopened["002-a-ball"].finished()
    assert reopened["003-a-cone"].status == "pending"
    assert not list(tmp_path.glob(".index*")), "no temporary files left behind"


def test_words_the_bundled_prior_does_not_know_fail_before_any_job_starts(tmp_path):
    prompts = write(tmp_path, "prompts.txt", "a red cube\n# a comment\na hamburger on a plate\n")
    with pytest.raises(ConfigError, match=r"line 3 .*does not know the word\(s\): hamburger, plate"):
        read_jobs(prompts)


def test_unreadable_index_is_a_clean_error(tmp_path):
    write(tmp_path, "index.json", "{not json")
    with pytest.raises(ConfigError, match="cannot read the batch index"):
        BatchIndex.open(tmp_path, [Job(1, "a cube", None, ())])


def test_batch_without_ray_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets when ray is not installed
    monkeypatch.setattr(sys, "argv", ["sds3d", "batch", str(write(tmp_path, "p.txt", "a red cube\n")), "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as info:
        main()
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert "runs its jobs on Ray, which is not installed" in err
    assert 'pip install -e ".[ray]"' in err


# Whole batches on Ray: one local session with two workers for the rest of the file.

@pytest.fixture(scope="module")
def workers():
    with pytest.MonkeyPatch.context() as patch:
        # Ray workers import this module to run `dies_once`.
        patch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
        # Ray's memory monitor kills workers when the whole machine runs low, whoever uses the memory;
        # on a shared test machine that would fail these jobs for reasons outside the batch.
        patch.setenv("RAY_memory_monitor_refresh_ms", "0")
        with ray_session(workers=2) as plan:
            yield plan


@pytest.fixture(scope="module")
def finished_batch(tiny_config, workers, tiny_sd_dir, tmp_path_factory):
    """Three prompts run on the two workers: (jobs, batch folder)."""
    folder = tmp_path_factory.mktemp("batch")
    prompts = write(folder, "prompts.txt", "a red cube\na blue sphere\na green cone\n")
    jobs = read_jobs(prompts, tiny_config, [f"guide.model={tiny_sd_dir}", *QUICK])
    run_batch(jobs, folder / "out", workers, retries=0)
    return jobs, folder / "out"


def test_three_prompts_on_two_workers_finish_with_glbs_and_a_complete_index(finished_batch):
    jobs, out = finished_batch
    records = json.loads((out / "index.json").read_text())["jobs"]
    assert [r["name"] for r in records] == [job.name for job in jobs]
    for record in records:
        assert (record["status"], record["attempts"], record["steps"], record["error"]) == ("done", 1, 4, None)
        assert record["run_dir"] == str(out / record["name"])
        assert record["glb"] == str(out / record["name"] / "mesh.glb")
        assert len(trimesh.load(record["glb"], force="mesh").faces) > 0
        assert record["seconds"] > 0


def test_running_the_batch_again_skips_finished_jobs(finished_batch, workers, capsys):
    jobs, out = finished_batch
    touched = {p: p.stat().st_mtime_ns for job in jobs for p in (out / job.name / "mesh.glb", out / job.name / "ckpt" / "last.pt")}
    index = run_batch(jobs, out, workers, retries=0)
    assert "skipping 3 finished jobs" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in touched} == touched
    assert [r.attempts for r in index.records.values()] == [1, 1, 1]


def dies_once(job, run_dir, threads):
    """The real job, but the first attempt of job 1 loses its worker process (as to the OOM killer)."""
    marker = run_dir.parent / f"{job.name}.died"
    if job.number == 1 and not marker.exists():
        marker.touch()
        os._exit(1)
    return run_job(job, run_dir, threads)


def test_failing_jobs_are_retried_and_reported_while_the_others_finish(tiny_config, workers, tiny_sd_dir, tmp_path):
    prompts = write(tmp_path, "prompts.yaml", "- a red cube\n- {prompt: a blue sphere, overrides: [objective.weight=.nan]}\n")
    jobs = read_jobs(prompts, tiny_config, [f"guide.model={tiny_sd_dir}", *QUICK])
    index = run_batch(jobs, tmp_path / "out", workers, retries=1, job_fn=dies_once)
    survivor, broken = index["001-a-red-cube"], index["002-a-blue-sphere"]
    assert (survivor.status, survivor.attempts, survivor.error) == ("done", 2, None)
    assert Path(survivor.glb).is_file()
    assert (broken.status, broken.attempts) == ("failed", 2)
    assert broken.error == "NonFiniteError: loss is nan at step 0"
    details = (tmp_path / "out" / broken.name / "error.txt").read_text()
    assert "in run_job" in details and details.endswith("NonFiniteError: loss is nan at step 0\n")
    assert "\x1b[" not in details
    saved = json.loads((tmp_path / "out" / "index.json").read_text())["jobs"]
    assert [(r["status"], r["attempts"]) for r in saved] == [("done", 2), ("failed", 2)]


def bad_config(job, run_dir, threads):
    raise ConfigError(f"'{job.prompt}' is wrong in a way no retry fixes")


def test_a_config_error_is_not_retried(tiny_config, workers, tmp_path):
    (job,) = read_jobs(write(tmp_path, "prompts.txt", "a red cube\n"), tiny_config, QUICK)
    index = run_batch([job], tmp_path / "out", workers, retries=2, job_fn=bad_config)
    assert (index[job.name].status, index[job.name].attempts) == ("failed", 1)
    assert "no retry fixes" in index[job.name].error


def test_an_interrupted_run_resumes_from_its_checkpoint(tiny_config, workers, tiny_sd_dir, tmp_path):
    prompts = write(tmp_path, "prompts.txt", "a red cube\n")
    (job,) = read_jobs(prompts, tiny_config, [f"guide.model={tiny_sd_dir}", *QUICK, "train.log_every=1"])
    run_dir = tmp_path / "out" / job.name
    api.generate(job.prompt, job.config, [*job.overrides, "train.steps=2"], run_dir=run_dir)  # a batch killed at step 2
    index = run_batch([job], tmp_path / "out", workers, retries=0)
    assert index[job.name].status == "done"
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # a fresh start would have logged 1, 2 again
    assert torch.load(run_dir / "ckpt" / "last.pt", weights_only=False)["step"] == 4
