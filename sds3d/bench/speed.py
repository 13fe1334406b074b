"""`sds3d bench speed`: the real train step timed part by part, the guide-bound floor measured in the
same run, and the hash-grid encoding backends against each other.

The steps are ``train.train_step`` itself. After ``warmup`` steps, ``steps`` plain steps give steps/s
(synchronised only at their ends), then ``steps`` more run with every part timed: render (cameras,
field queries, compositing; the hash-grid encoding's forward is also timed alone, inside render),
encode (the guide's input: VAE encoder, tiny VAE or resize), objective (its guide calls also timed
alone), backward and optimiser. On CUDA each timed part is bracketed by ``torch.cuda.synchronize``.
The floor replays the guide calls of the last timed step, with the same inputs, ``steps`` times.
"""

import json
import os
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from sds3d.config import load_config
from sds3d.device import pick_device
from sds3d.timing import PartTimer
from sds3d.train import build_session, memory_mb, train_step

PARTS = ("render", "encode", "objective", "backward", "optimiser")


def time_guide_calls(guide, timer: PartTimer, calls: List[tuple]) -> None:
    """Times the guide's ``predict_noise`` as "guide calls" and records each call's inputs in ``calls``
    (an instance attribute shadowing the method, so every objective's calls go through it)."""
    predict = guide.predict_noise

    def timed(x_t, t, embeddings, **kwargs):
        calls.append(((x_t, t, embeddings), kwargs))
        with timer("guide calls"):
            return predict(x_t, t, embeddings, **kwargs)

    guide.predict_noise = timed


def time_encoding(encoding: torch.nn.Module, timer: PartTimer) -> None:
    """Times the hash-grid encoding's forward passes as "hash-grid encoding" with forward hooks."""
    began = []

    def before(module, args):
        timer.sync()
        began.append(time.perf_counter())

    def after(module, args, output):
        timer.sync()
        timer.seconds["hash-grid encoding"] += time.perf_counter() - began.pop()

    encoding.register_forward_pre_hook(before)
    encoding.register_forward_hook(after)


def guide_floor(predict, calls: Sequence[tuple], repeats: int, timer: PartTimer) -> float:
    """Seconds per step of the guide's own calls alone: ``calls`` (one step's) replayed ``repeats`` times."""
    timer.sync()
    began = time.perf_counter()
    for _ in range(repeats):
        for args, kwargs in calls:
            predict(*args, **kwargs)
    timer.sync()
    return (time.perf_counter() - began) / repeats


def bench_speed(config: Optional[str] = None, overrides: Sequence[str] = (), steps: int = 10, warmup: int = 3,
                start_step: int = 0, random_weights: bool = False, prompt: str = "a red cube") -> Dict:
    """Times ``steps`` train steps of the config (see the module docstring); returns the measurements."""
    cfg = load_config(config, overrides, prompt)
    device = pick_device(cfg.device)
    guide = None
    if random_weights:
        from sds3d.guides.random_weights import random_weights_guide

        guide = random_weights_guide(cfg.guide, device)
    session = build_session(cfg, guide)
    timer, calls = PartTimer(device), []
    predict = session.guide.predict_noise
    first = start_step + warmup
    for step in range(start_step, first):
        train_step(session, step)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timer.sync()
    began = time.perf_counter()
    for step in range(first, first + steps):
        train_step(session, step)
    timer.sync()
    plain_s = (time.perf_counter() - began) / steps
    time_guide_calls(session.guide, timer, calls)
    time_encoding(session.scene["field"].encoding, timer)
    for step in range(first + steps, first + 2 * steps):
        calls.clear()
        train_step(session, step, timer)
    floor_s = guide_floor(predict, list(calls), steps, timer)
    per_step = {part: seconds / steps for part, seconds in timer.seconds.items()}
    return {
        "config": config or "base", "overrides": list(overrides), "random_weights": random_weights,
        "guide": str(cfg.guide.model), "device": str(device), "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", ""), "load_average": list(os.getloadavg()),
        "cpu_count": os.cpu_count(), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else "",
        "render": f"{cfg.render.width}x{cfg.render.height}", "batch": cfg.cameras.batch_size,
        "warmup": warmup, "steps": steps, "start_step": start_step,
        "step_s": plain_s, "steps_per_s": 1.0 / plain_s, "timed_step_s": sum(per_step.get(p, 0.0) for p in PARTS),
        "parts_s": per_step, "guide_calls_per_step": len(calls), "floor_s": floor_s,
        "step_over_floor": plain_s / floor_s if floor_s > 0 else None,
        "peak_memory_mb": memory_mb(device),
        "peak_memory_kind": "torch.cuda.max_memory_allocated" if device.type == "cuda" else "process peak RSS",
    }


def encoding_rows(n_points: int, levels: int, device: str, repeats: int) -> List[Dict]:
    """The hash-grid backends on the same points (``sds3d.bench.encoding``)."""
    from sds3d.bench.encoding import bench_encodings

    return bench_encodings(n_points=n_points, levels=levels, device=device, repeats=repeats)


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:9.1f} ms"


def format_report(result: Dict) -> str:
    """The breakdown, steps/s, floor and memory as text; the encoding table when present."""
    r, parts = result, result["parts_s"]
    lines = [f"config {r['config']} {' '.join(r['overrides'])}".rstrip() + (" (random weights)" if r["random_weights"] else ""),
             f"device {r['device']} {r['gpu']}".rstrip() + f", {r['torch_threads']} torch threads, {r['cpu_count']} CPUs, "
             f"load average {r['load_average'][0]:.2f}; render {r['render']}, batch {r['batch']}, "
             f"{r['steps']} steps after {r['warmup']} warm-up from step {r['start_step']}",
             "part                              per step    share"]
    total = r["timed_step_s"] or 1.0
    for part in PARTS:
        lines.append(f"{part:<30}{_ms(parts.get(part, 0.0))} {parts.get(part, 0.0) / total:7.1%}")
        inner = {"render": "hash-grid encoding", "objective": "guide calls"}.get(part)
        if inner:
            lines.append(f"  of which {inner:<20}{_ms(parts.get(inner, 0.0))} {parts.get(inner, 0.0) / total:7.1%}")
    lines += [f"{'timed step (sum of parts)':<30}{_ms(r['timed_step_s'])}",
              f"{'step (untimed pass)':<30}{_ms(r['step_s'])}   {r['steps_per_s']:.3g} steps/s",
              f"{'guide-bound floor':<30}{_ms(r['floor_s'])}   ({r['guide_calls_per_step']} guide call(s) per step replayed; "
              f"step / floor = {r['step_over_floor']:.2f})",
              f"{'peak memory':<30}{r['peak_memory_mb']:9.0f} MB ({r['peak_memory_kind']})"]
    if "encodings" in r:
        lines += ["", f"{'encoding backend':<16} {'device':<7} {'points':>8} {'levels':>6} {'fwd ms':>9} {'fwd+bwd ms':>10} {'speedup':>8}"]
        for row in r["encodings"]:
            if row.get("skipped"):
                lines.append(f"{row['backend']:<16} skipped: {row['skipped']}")
                continue
            speedup = row.get("speedup_vs_reference")
            lines.append(f"{row['backend']:<16} {row['device']:<7} {row['points']:>8} {row['levels']:>6} {row['forward_ms']:>9.2f} "
                         f"{row['forward_backward_ms']:>10.2f} {'' if speedup is None else f'{speedup:.1f}x':>8}")
    return "\n".join(lines)


def write_report(result: Dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path
