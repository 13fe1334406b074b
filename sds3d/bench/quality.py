"""`sds3d bench quality`: each method config on a fixed world prompt set, scored against ground truth.

Per run: silhouette IoU over four eval views at the best turn about the vertical axis, colour error
inside each object (albedo renders against the world's albedo), steps and wall time. Writes
``quality.json`` and ``quality.png`` (for each run, its renders above the ground truth).
"""

import json
import time
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import torch

from sds3d import api
from sds3d.cameras import orbit_cameras
from sds3d.export import write_image
from sds3d.render.volume import VolumeRenderer
from sds3d.views import render_view
from sds3d.world.metrics import best_rotation_iou, ground_truth, per_object_scores
from sds3d.world.scenes import parse_caption

PROMPTS: Dict[str, List[str]] = {
    "single": ["a red cube", "a blue sphere", "a yellow cone"],
    "pair": ["a red cube to the left of a blue sphere", "a yellow cylinder on top of a purple cube"],
    "held-out": ["a green cone", "a blue torus"],
}
# The shipped method configs that run on the bundled prior (base is SDS); dreamfusion-sd needs SD on a GPU.
METHODS = ("base", "sjc", "prolificdreamer", "csd", "nfsd", "ism", "bsd")
RESOLUTION = 64


def scene_render_fn(cfg, scene):
    renderer = VolumeRenderer(cfg.render, cfg.scene.radius)

    def render(cameras):
        outs = [render_view(renderer, scene, cam) for cam in cameras]
        return torch.cat([o.rgb for o in outs]).cpu(), torch.cat([o.opacity[..., 0] for o in outs]).cpu()

    return render


def score_run(run_dir: Path, prompt: str) -> Dict:
    cfg, scene = api.load_run(run_dir)
    truth_scene, render = parse_caption(prompt), scene_render_fn(cfg, scene)
    iou, offset = best_rotation_iou(render, truth_scene, cfg.cameras, resolution=RESOLUTION)
    objects = per_object_scores(render, truth_scene, cfg.cameras, offset, resolution=RESOLUTION)
    rgb = render(orbit_cameras(cfg.cameras, 4, RESOLUTION))[0]
    azimuth = torch.tensor([-180.0, -90.0, 0.0, 90.0]) - offset
    truth = ground_truth(truth_scene, cfg.cameras, azimuth, RESOLUTION).rgb
    picture = torch.cat([torch.cat(list(rgb), dim=1), torch.cat(list(truth), dim=1)], dim=0)
    return {"iou": iou, "turn_deg": offset, "colour_error": float(np.mean([o["colour_error"] for o in objects])),
            "objects": objects, "picture": picture}


def prompt_set(prompt: str) -> str:
    return next((name for name, prompts in PROMPTS.items() if prompt in prompts), "other")


def run_quality(methods: Sequence[str], overrides: Sequence[str], out_dir: Path,
                sets: Sequence[str] = tuple(PROMPTS), prompts: Sequence[str] = ()) -> List[Dict]:
    """Every prompt of ``sets`` (or the world captions ``prompts``) through every method config (a
    shipped name or a YAML path)."""
    rows, pictures = [], []
    jobs = [(prompt_set(p), p) for p in prompts] or [(name, p) for name in sets for p in PROMPTS[name]]
    for method in methods:
        for set_name, prompt in jobs:
            run_dir = out_dir / Path(method).stem / prompt.replace(" ", "-")
            began = time.perf_counter()
            result = api.generate(prompt, method, [*overrides, "export.video_frames=0"], run_dir=run_dir)
            wall = time.perf_counter() - began
            scores = score_run(result.run_dir, prompt)
            pictures.append(scores.pop("picture"))
            objective = api.load_run(result.run_dir)[0].objective.name
            rows.append({"method": Path(method).stem, "objective": objective, "set": set_name, "prompt": prompt,
                         **scores, "steps": result.steps, "wall_s": wall, "s_per_step": result.seconds_per_step})
    (out_dir / "quality.json").write_text(json.dumps(rows, indent=2))
    write_image(torch.cat(pictures).numpy(), out_dir / "quality.png")
    return rows


def format_table(rows: List[Dict]) -> str:
    lines = [f"{'method':<16} {'set':<9} {'prompt':<44} {'IoU':>5} {'colour':>6} {'steps':>5} {'s/step':>6} {'wall s':>7}"]
    for r in rows:
        lines.append(f"{r['method'] + ' (' + r['objective'] + ')':<16} {r['set']:<9} {r['prompt']:<44} {r['iou']:>5.2f} "
                     f"{r['colour_error']:>6.3f} {r['steps']:>5d} {r['s_per_step']:>6.2f} {r['wall_s']:>7.1f}")
        if len(r["objects"]) > 1:
            parts = "  ".join(f"object {k + 1}: IoU {o['iou']:.2f} colour {o['colour_error']:.3f}" for k, o in enumerate(r["objects"]))
            lines.append(f"{'':<27}{parts}")
    return "\n".join(lines)
