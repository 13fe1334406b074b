"""index.json in the batch folder: one record per job, rewritten atomically whenever a job changes state."""

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from sds3d.atomic import atomic_write
from sds3d.batch.jobs import Job
from sds3d.errors import ConfigError

INDEX_NAME = "index.json"


@dataclass
class JobRecord:
    name: str  # the run folder's name
    prompt: str
    run_dir: str
    status: str = "pending"  # pending | running | done | failed
    glb: Optional[str] = None
    outputs: List[str] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0  # wall time of every attempt, over all invocations
    attempts: int = 0  # over all invocations
    error: Optional[str] = None  # why the last attempt failed

    def finished(self) -> bool:
        """Done, and its outputs are still there (a deleted GLB makes the job run again)."""
        return self.status == "done" and all(Path(p).is_file() for p in self.outputs)


class BatchIndex:
    def __init__(self, path: Path, records: Dict[str, JobRecord]):
        self.path = path
        self.records = records

    @classmethod
    def open(cls, folder: Path, jobs: Sequence[Job]) -> "BatchIndex":
        """The index for ``jobs``: records of an earlier run of the same batch are kept, new jobs are pending."""
        path = Path(folder) / INDEX_NAME
        previous = cls._read(path) if path.is_file() else {}
        records = {job.name: previous.get(job.name) or JobRecord(job.name, job.prompt, str(Path(folder) / job.name)) for job in jobs}
        index = cls(path, records)
        index.save()
        return index

    @staticmethod
    def _read(path: Path) -> Dict[str, JobRecord]:
        known = {f.name for f in fields(JobRecord)}
        try:
            rows = json.loads(path.read_text())["jobs"]
            return {row["name"]: JobRecord(**{k: v for k, v in row.items() if k in known}) for row in rows}
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"cannot read the batch index '{path}': {exc}",
                              hint="delete it and run the same command again; each job then resumes from its run folder's "
                                   "checkpoint") from exc

    def __getitem__(self, name: str) -> JobRecord:
        return self.records[name]

    def update(self, name: str, **changes) -> JobRecord:
        record = self.records[name]
        for key, value in changes.items():
            setattr(record, key, value)
        self.save()
        return record

    def counts(self) -> Dict[str, int]:
        statuses = [r.status for r in self.records.values()]
        return {status: statuses.count(status) for status in ("pending", "running", "done", "failed")}

    def save(self) -> None:
        with atomic_write(self.path) as tmp:
            tmp.write_text(json.dumps({"jobs": [asdict(r) for r in self.records.values()]}, indent=1) + "\n")
