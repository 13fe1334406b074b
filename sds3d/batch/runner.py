"""Run a batch on Ray: start or join Ray, keep N jobs in flight, retry failures, keep the index current."""

import logging
import os
import re
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, Mapping, Optional, Sequence

from tqdm import tqdm

from sds3d.batch.index import BatchIndex
from sds3d.batch.jobs import Job, default_batch_dir, read_jobs
from sds3d.batch.worker import run_job
from sds3d.errors import CheckpointError, ConfigError, Sds3dError

ERROR_FILE = "error.txt"
ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class Workers:
    """How a batch uses Ray: jobs in flight at once, each job's resource request and torch threads."""

    count: int
    threads: int
    task_options: Dict[str, float] = field(default_factory=dict)


def plan_local(workers: Optional[int], gpus: int, cpus: int) -> Workers:
    """One worker per GPU by default (more than the GPUs share them), else ``workers`` CPU workers (default 1)."""
    count = workers or gpus or 1
    options = {"num_cpus": 1, "num_gpus": min(1.0, gpus / count)} if gpus else {"num_cpus": 1}
    return Workers(count, max(1, cpus // count), options)


def plan_cluster(workers: Optional[int], resources: Mapping[str, float], address: str) -> Workers:
    """One GPU per job; by default as many jobs in flight as the cluster has GPUs now."""
    gpus = int(resources.get("GPU", 0))
    if gpus == 0:
        raise ConfigError(f"the Ray cluster at '{address}' has no GPUs", hint="batch jobs on a cluster take one GPU each; "
                          "add GPU nodes, or leave out --ray-address to run CPU workers on this machine")
    return Workers(workers or gpus, max(1, int(resources.get("CPU", 1)) // gpus), {"num_cpus": 1, "num_gpus": 1})


def import_ray():
    try:
        import ray
    except ImportError as exc:
        raise Sds3dError("`sds3d batch` runs its jobs on Ray, which is not installed",
                         hint='pip install -e ".[ray]"   (or: pip install "ray>=2.9")') from exc
    return ray


@contextmanager
def ray_session(address: Optional[str] = None, workers: Optional[int] = None) -> Iterator[Workers]:
    """A fresh local Ray instance (``address`` None) or a connection to a cluster; shut down on exit."""
    ray = import_ray()
    # Set before Ray starts: no usage reports leave the machine.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
    try:
        if address:
            try:
                ray.init(address=address, **quiet)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise Sds3dError(f"cannot connect to the Ray cluster at '{address}': {exc}",
                                 hint="run `ray status` on the head node; addresses look like auto, HOST:6379 or ray://HOST:10001") from exc
            yield plan_cluster(workers, ray.cluster_resources(), address)
        else:
            import torch

            gpus, cpus = torch.cuda.device_count(), len(os.sched_getaffinity(0))
            plan = plan_local(workers, gpus, cpus)
            # address="local": a fresh instance, never someone else's that happens to run on this machine.
            # Ray's CPU count here is the number of jobs in flight; the real cores go to torch threads.
            ray.init(address="local", num_cpus=plan.count, num_gpus=gpus, object_store_memory=100 * 2**20, **quiet)
            yield plan
    finally:
        ray.shutdown()


def run_batch(jobs: Sequence[Job], out_dir: Path, workers: Workers, retries: int,
              job_fn: Callable = run_job) -> BatchIndex:
    """Run every unfinished job, at most ``workers.count`` at once, each up to ``1 + retries`` times.

    A job that raises or whose worker process dies is put back in the queue (its next attempt resumes
    from the run folder's checkpoint) until its attempts are used up; then it is marked failed with the
    reason and the batch goes on. ``job_fn(job, run_dir, threads)`` runs in the worker.
    """
    ray = import_ray()
    out_dir = Path(out_dir).expanduser().resolve()  # workers on other nodes have other working directories
    index = BatchIndex.open(out_dir, jobs)
    queue = deque(job for job in jobs if not index[job.name].finished())
    # max_retries=0: worker deaths come back to this loop like exceptions, so one budget and one count cover both.
    remote = ray.remote(job_fn).options(max_retries=0, **workers.task_options)
    attempts = {job.name: 0 for job in queue}
    running = {}
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(queue), desc="batch", unit="job", dynamic_ncols=True)
    if len(queue) < len(jobs):
        bar.write(f"skipping {len(jobs) - len(queue)} finished jobs (index {index.path})")
    try:
        while queue or running:
            while queue and len(running) < workers.count:
                job = queue.popleft()
                attempts[job.name] += 1
                running[remote.remote(job, out_dir / job.name, workers.threads)] = (job, time.perf_counter())
                index.update(job.name, status="running", attempts=index[job.name].attempts + 1)
            # A short timeout: a blocking ray.wait would hold off Ctrl-C until some job ends.
            ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
            if not ready:
                bar.refresh()
                continue
            job, started = running.pop(ready[0])
            seconds = index[job.name].seconds + time.perf_counter() - started
            try:
                result = ray.get(ready[0])
            except ray.exceptions.RayError as exc:
                reason = describe_failure(exc)
                (out_dir / job.name).mkdir(parents=True, exist_ok=True)
                details = getattr(exc, "traceback_str", None) or str(exc)
                (out_dir / job.name / ERROR_FILE).write_text(ANSI_COLOUR.sub("", details) + "\n")
                if attempts[job.name] <= retries and not deterministic(exc):
                    bar.write(f"retrying {job.name} (attempt {attempts[job.name]} of {1 + retries} failed): {reason}")
                    index.update(job.name, status="pending", seconds=seconds, error=reason)
                    queue.append(job)
                    continue
                bar.write(f"failed   {job.name}: {reason}  (details in {out_dir / job.name / ERROR_FILE})")
                index.update(job.name, status="failed", seconds=seconds, error=reason)
            else:
                outputs = [str(p) for p in result.outputs]
                glb = next((p for p in outputs if p.endswith(".glb")), None)
                bar.write(f"done     {job.name}: {glb or out_dir / job.name}")
                index.update(job.name, status="done", seconds=seconds, error=None, outputs=outputs, glb=glb, steps=result.steps)
            bar.update(1)
            bar.set_postfix(index.counts())
    except KeyboardInterrupt:
        for job, _ in running.values():
            index.update(job.name, status="pending", error="the batch was interrupted")
        bar.write("interrupted: run the same command again to resume (the running jobs from their last checkpoints)")
        raise
    finally:
        bar.close()
    return index


def deterministic(exc: Exception) -> bool:
    """A failure another attempt would repeat: the job's config, prompt or checkpoint is wrong."""
    return any(isinstance(e, (ConfigError, CheckpointError)) for e in (exc, getattr(exc, "cause", None)))


def describe_failure(exc: Exception) -> str:
    """One line: the job's own exception (through Ray's wrapper), or what happened to its worker."""
    cause = getattr(exc, "cause", None) or exc
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0]}" if lines else type(cause).__name__


def batch_generate(prompts_file: Path, config: Optional[str] = None, overrides: Sequence[str] = (),
                   workers: Optional[int] = None, address: Optional[str] = None, retries: int = 2,
                   out_dir: Optional[Path] = None) -> BatchIndex:
    """`sds3d batch`: check every prompt, then run them all on Ray; the index says how each ended."""
    jobs = read_jobs(prompts_file, config, overrides)
    out_dir = out_dir or default_batch_dir(prompts_file, config, overrides)
    with ray_session(address, workers) as plan:
        return run_batch(jobs, out_dir, plan, retries)
