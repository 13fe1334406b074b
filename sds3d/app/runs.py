"""Reading run folders, whoever wrote them (`sds3d run` or the app): gallery summaries, live progress
and the loss curve, all from the files a run leaves on disk."""

import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Dict, List, Optional

from omegaconf import OmegaConf

_STAMP = re.compile(r"-(\d{8}-\d{6})(?:-\d+)?$")  # new_run_dir's suffix, with its optional -2, -3, ...


@dataclass
class RunSummary:
    run_dir: Path
    prompt: str
    method: str  # the objective's name
    model: str  # the guide: a folder's name or a hub id
    date: datetime
    steps: int  # the last logged step
    total_steps: int
    thumbnail: Path  # the latest validation grid
    mesh: Optional[Path]  # the refine stage's mesh where the run has one
    video: Optional[Path]

    @property
    def caption(self) -> str:
        return f"{self.prompt} · {self.method} on {self.model} · {self.date:%Y-%m-%d %H:%M}"


@dataclass
class Progress:
    step: int
    total: int
    loss: Optional[float]
    eta_s: Optional[float]

    def describe(self) -> str:
        parts = [f"step {self.step}/{self.total}"]
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4g}")
        if self.eta_s is not None:
            parts.append(f"ETA {format_seconds(self.eta_s)}")
        return " · ".join(parts)


def format_seconds(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def read_metrics(run_dir: Path) -> List[Dict]:
    """The records of metrics.jsonl; a line still being written (or otherwise unreadable) is left out."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "step" in record:
            records.append(record)
    return records


def loss_curve(records: List[Dict]) -> List[Dict]:
    """Long-format rows {step, term, value}: the total loss and each ``loss/<term>`` of every record."""
    rows = []
    for record in records:
        for key, value in record.items():
            if (key == "loss" or key.startswith("loss/")) and isinstance(value, (int, float)):
                rows.append({"step": record["step"], "term": key.removeprefix("loss/"), "value": float(value)})
    return rows


def read_progress(run_dir: Path, total: int) -> Progress:
    """Where a run stands, from its last metrics record (none yet: step 0, no loss, no ETA)."""
    records = read_metrics(run_dir)
    if not records:
        return Progress(0, total, None, None)
    last = records[-1]
    rate = last.get("steps_per_s") or 0.0
    eta = (total - last["step"]) / rate if rate > 0 else None
    return Progress(last["step"], total, last.get("loss"), eta)


def latest_grid(run_dir: Path) -> Optional[Path]:
    """The newest progress/step-XXXXX.png (zero-padded, so the last name is the latest step)."""
    grids = sorted((Path(run_dir) / "progress").glob("step-*.png"))
    return grids[-1] if grids else None


def summarise(run_dir: Path) -> Optional[RunSummary]:
    """A run folder's summary, or None for a folder with no readable config.yaml or no validation grid yet."""
    config_path = run_dir / "config.yaml"
    thumbnail = latest_grid(run_dir)
    if thumbnail is None or not config_path.is_file():
        return None
    try:
        cfg = OmegaConf.load(config_path)
    except Exception:  # a hand-edited or foreign config.yaml: not a run this gallery can show
        return None
    records = read_metrics(run_dir)
    stamp = _STAMP.search(run_dir.name)
    date = datetime.strptime(stamp.group(1), "%Y%m%d-%H%M%S") if stamp else datetime.fromtimestamp(config_path.stat().st_mtime)
    mesh = next((m for m in (run_dir / "refine" / "mesh.glb", run_dir / "mesh.glb") if m.is_file()), None)
    video = run_dir / "video.mp4"
    return RunSummary(
        run_dir=run_dir,
        prompt=str(OmegaConf.select(cfg, "prompt.text", default="?")),
        method=str(OmegaConf.select(cfg, "objective.name", default="?")),
        model=Path(str(OmegaConf.select(cfg, "guide.model", default="?"))).name,
        date=date,
        steps=records[-1]["step"] if records else 0,
        total_steps=int(OmegaConf.select(cfg, "train.steps", default=0)),
        thumbnail=thumbnail,
        mesh=mesh,
        video=video if video.is_file() else None,
    )


def scan_runs(outputs: Path) -> List[RunSummary]:
    """Every run folder directly under ``outputs``, newest first."""
    if not Path(outputs).is_dir():
        return []
    summaries = [summarise(d) for d in Path(outputs).iterdir() if d.is_dir()]
    return sorted((s for s in summaries if s is not None), key=lambda s: (s.date, s.run_dir.name), reverse=True)
