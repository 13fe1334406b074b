"""One background thread that runs queued requests one at a time, so the page stays responsive; a
queued request can be cancelled and a running one stopped (it keeps its checkpoint and exports)."""

import itertools
import logging
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

from sds3d import api
from sds3d.app.request import RunRequest, explain
from sds3d.errors import ConfigError, Sds3dError

log = logging.getLogger("sds3d")

WAITING, RUNNING, FINISHED, STOPPED, FAILED = "queued", "running", "finished", "stopped", "failed"
MAX_WAITING = 8


@dataclass
class Job:
    id: int
    request: RunRequest
    state: str = WAITING
    run_dir: Optional[Path] = None  # set when the run starts
    message: str = ""  # why it failed, or when it stopped
    stop_requested: threading.Event = field(default_factory=threading.Event)

    @property
    def done(self) -> bool:
        return self.state in (FINISHED, STOPPED, FAILED)


class Worker:
    def __init__(self):
        self._queue: "queue.Queue[Optional[Job]]" = queue.Queue()
        self._jobs: Dict[int, Job] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._thread = threading.Thread(target=self._loop, name="sds3d-worker", daemon=True)
        self._thread.start()

    def submit(self, request: RunRequest) -> Job:
        """Queues the run; a ConfigError when MAX_WAITING runs are already waiting."""
        with self._lock:
            waiting = sum(1 for j in self._jobs.values() if j.state == WAITING)
            if waiting >= MAX_WAITING:
                raise ConfigError(f"the queue is full: {waiting} runs are waiting", hint="try again when one has started")
            job = Job(next(self._ids), request)
            self._jobs[job.id] = job
        self._queue.put(job)
        return job

    def job(self, job_id: int) -> Job:
        return self._jobs[job_id]

    def ahead_of(self, job: Job) -> int:
        """How many runs will go before ``job``: the running one and those queued earlier."""
        with self._lock:
            return sum(1 for j in self._jobs.values() if j.id < job.id and j.state in (WAITING, RUNNING))

    def current(self) -> Optional[Job]:
        """The running job, else the next queued one, else None."""
        with self._lock:
            pending = [j for j in self._jobs.values() if j.state in (WAITING, RUNNING)]
        return min(pending, key=lambda j: j.id, default=None)

    def stop(self, job_id: int) -> None:
        """Cancel a queued job, or ask a running one to stop after its current step."""
        with self._lock:
            job = self._jobs[job_id]
            job.stop_requested.set()
            if job.state == WAITING:
                job.message, job.state = "before it started", STOPPED

    def shutdown(self) -> None:
        """Stop every job and wait until the running one has saved its checkpoint and exported."""
        for job_id in list(self._jobs):
            self.stop(job_id)
        self._queue.put(None)
        self._thread.join()

    def _loop(self) -> None:
        while (job := self._queue.get()) is not None:
            with self._lock:
                if job.state != WAITING:
                    continue
                try:
                    job.run_dir = api.new_run_dir(job.request.cfg)
                except Sds3dError as exc:  # out_dir not writable: this job fails, the worker goes on
                    job.message, job.state = explain(exc), FAILED
                    continue
                job.state = RUNNING
            self._run(job)

    def _run(self, job: Job) -> None:
        request = job.request
        try:
            result = api.generate(request.prompt, request.config, request.overrides, job.run_dir,
                                  should_stop=job.stop_requested.is_set)
        except Sds3dError as exc:
            job.message, job.state = explain(exc), FAILED
        except Exception as exc:  # the page shows the message; the traceback goes to the server's log
            log.exception("run %d failed", job.id)
            job.message, job.state = f"{type(exc).__name__}: {exc}", FAILED
        else:
            job.message = f"at step {result.steps}" if result.interrupted else ""
            job.state = STOPPED if result.interrupted else FINISHED
