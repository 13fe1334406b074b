"""`sds3d bench speed --picard P`: DreamPropeller's wall-clock gain, measured. One invocation runs the config twice
on a world caption, sequentially (train.picard.window=1: the ordinary loop, draws keyed by step) and with a Picard
window of P workers, and scores both exported assets like `sds3d bench quality`: the Picard run's time counts as a
time to the sequential run's quality when its GLB IoU is within 0.02 of it."""

import json
import os
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

import torch

from sds3d import api
from sds3d.bench.quality import score_run

SAME_QUALITY = 0.02


def bench_picard(config: Optional[str], overrides: Sequence[str], prompt: str, window: int, out_dir: Path) -> Dict:
    rows = {}
    for name, picard in (("sequential", 1), (f"picard-{window}", window)):
        began = time.perf_counter()
        result = api.generate(prompt, config, [*overrides, f"train.picard.window={picard}"], run_dir=out_dir / name)
        wall = time.perf_counter() - began
        score = score_run(result.run_dir, prompt)
        rows[name] = {"window": picard, "wall_s": wall, "steps": result.steps, "nerf_iou": score["iou"],
                      "glb_iou": score["mesh_iou"], "colour_error": score["colour_error"]}
    sequential, parallel = rows["sequential"], rows[f"picard-{window}"]
    return {"config": config or "base", "overrides": list(overrides), "prompt": prompt, "window": window,
            "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "load_average": list(os.getloadavg()),
            "runs": rows, "speedup": sequential["wall_s"] / parallel["wall_s"],
            "same_quality": abs(parallel["glb_iou"] - sequential["glb_iou"]) <= SAME_QUALITY}


def format_picard(result: Dict) -> str:
    lines = [f"{'run':<12} {'wall s':>8} {'steps':>6} {'NeRF IoU':>9} {'GLB IoU':>8} {'colour':>7}"]
    for name, row in result["runs"].items():
        lines.append(f"{name:<12} {row['wall_s']:>8.1f} {row['steps']:>6} {row['nerf_iou']:>9.2f} {row['glb_iou']:>8.2f} "
                     f"{row['colour_error']:>7.3f}")
    verdict = "within" if result["same_quality"] else "NOT within"
    lines.append(f"speed-up {result['speedup']:.2f}x; the Picard run's GLB IoU is {verdict} {SAME_QUALITY} of the sequential run's "
                 f"({result['cpu_count']} CPUs, load {result['load_average'][0]:.1f})")
    return "\n".join(lines)


def write_picard(result: Dict, path: Path) -> Path:
    path.write_text(json.dumps(result, indent=2))
    return path
