"""One batch job as it runs inside a Ray worker process."""

from pathlib import Path

import torch

from sds3d import api
from sds3d.batch.jobs import Job
from sds3d.errors import Sds3dError
from sds3d.train import RunResult


class JobInterrupted(Sds3dError):
    """The run stopped early (its process got Ctrl-C); its checkpoint lets the next attempt resume."""


def run_job(job: Job, run_dir: Path, threads: int) -> RunResult:
    """Train ``job`` in ``run_dir``; a folder with a checkpoint (an interrupted or failed attempt) resumes."""
    # Several workers share the machine: each gets its slice of the cores, not torch's default of all.
    torch.set_num_threads(threads)
    if (run_dir / "ckpt" / "last.pt").is_file():
        result = api.resume(run_dir, job.overrides)
    else:
        result = api.generate(job.prompt, job.config, job.overrides, run_dir=run_dir)
    if result.interrupted:
        raise JobInterrupted(f"interrupted at step {result.steps}", hint="the next attempt resumes from its checkpoint")
    return result
