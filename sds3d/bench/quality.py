"""`sds3d bench quality`: each method config on a fixed world prompt set, scored against ground truth.

Per run: silhouette IoU over four eval views at the best turn about the vertical axis, colour error
inside each object (albedo renders against the world's albedo), the silhouette IoU of the exported mesh
(GLB IoU: the marching-cubes surface the GLB holds, rasterised; 0 when the run has no surface), steps and wall time; for scenes of two
objects, each object's IoU and colour error inside its own ground-truth region. A method whose objective
is ``semantic`` gets the layout of the caption's true scene (``world_layout``). With ``refine``, each run
also goes through the mesh stage (``sds3d refine``), whose renders are scored against the ground truth
and against the NeRF's (PSNR and silhouette IoU). Writes ``quality.json`` and ``quality.png`` (for each
run, its renders, then the refined mesh's, above the ground truth).
"""

import json
import logging
import time
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import torch
from torch import nn

from sds3d import api
from sds3d.cameras import orbit_cameras
from sds3d.atomic import atomic_write
from sds3d.config import load_config, load_saved_config
from sds3d.errors import ExportError
from sds3d.export import write_image
from sds3d.refine import REFINE_DIR, load_refined, starting_surface
from sds3d.render.raster import MeshRenderer
from sds3d.render.volume import VolumeRenderer
from sds3d.views import render_view
from sds3d.world.metrics import best_rotation_iou, ground_truth, per_object_scores, silhouette_iou
from sds3d.train import RunResult
from sds3d.world.scenes import Scene, parse_caption

log = logging.getLogger("sds3d")

PROMPTS: Dict[str, List[str]] = {
    "single": ["a red cube", "a blue sphere", "a yellow cone"],
    "pair": ["a red cube to the left of a blue sphere", "a yellow cylinder on top of a purple cube"],
    "held-out": ["a green cone", "a blue torus"],
    # Colour binding: the same two shapes with their colours swapped, and a stacked pair.
    "compositional": ["a red cube to the left of a blue sphere", "a blue cube to the left of a red sphere",
                      "a yellow cylinder on top of a purple cube"],
}
# The shipped method configs that run on the bundled prior (base is SDS); dreamfusion-sd needs SD on a GPU.
METHODS = ("base", "sjc", "prolificdreamer", "csd", "nfsd", "ism", "bsd", "csm", "semantic")
RESOLUTION = 64
BOX_SCALE = 1.2  # layout box half side / object half extent: a margin, yet a pair's boxes stay apart


def world_layout(scene: Scene) -> dict:
    """The layout of a world scene: one box per object around it, prompted by its phrase."""
    return {"prompt": scene.caption, "objects": [
        {"prompt": obj.phrase, "center": list(obj.center), "size": [2 * BOX_SCALE * obj.size] * 3} for obj in scene.objects]}


def method_overrides(method: str, prompt: str, overrides: Sequence[str], out_dir: Path) -> List[str]:
    """``overrides``, plus the true scene's layout for a semantic method."""
    if load_config(method, overrides, prompt).objective.name != "semantic":
        return list(overrides)
    path = out_dir / "layouts" / f"{prompt.replace(' ', '-')}.json"
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(world_layout(parse_caption(prompt)), indent=2))
    return [*overrides, f"layout.file={path}"]


def scene_render_fn(cfg, scene, renderer=None):
    renderer = renderer or VolumeRenderer(cfg.render, cfg.scene.radius)

    def render(cameras):
        outs = [render_view(renderer, scene, cam) for cam in cameras]
        return torch.cat([o.rgb for o in outs]).cpu(), torch.cat([o.opacity[..., 0] for o in outs]).cpu()

    return render


def exported_asset_iou(cfg, scene, truth_scene: Scene, rotations: int = 36, resolution: int = RESOLUTION) -> float:
    """Silhouette IoU of the mesh the run exports (its surface and albedo, before baking), rasterised."""
    try:
        surface = starting_surface(scene, cfg, cfg.export.resolution)
    except ExportError:
        return 0.0
    asset = nn.ModuleDict({"field": surface, "background": scene["background"].cpu()})
    render = scene_render_fn(cfg, asset, MeshRenderer(cfg.render))
    return best_rotation_iou(render, truth_scene, cfg.cameras, rotations=rotations, resolution=resolution)[0]


def score_run(run_dir: Path, prompt: str) -> Dict:
    cfg, scene = api.load_run(run_dir)
    truth_scene, render = parse_caption(prompt), scene_render_fn(cfg, scene)
    iou, offset = best_rotation_iou(render, truth_scene, cfg.cameras, resolution=RESOLUTION)
    objects = per_object_scores(render, truth_scene, cfg.cameras, offset, resolution=RESOLUTION)
    rgb = render(orbit_cameras(cfg.cameras, 4, RESOLUTION))[0]
    azimuth = torch.tensor([-180.0, -90.0, 0.0, 90.0]) - offset
    truth = ground_truth(truth_scene, cfg.cameras, azimuth, RESOLUTION).rgb
    picture = torch.cat([torch.cat(list(rgb), dim=1), torch.cat(list(truth), dim=1)], dim=0)
    return {"iou": iou, "mesh_iou": exported_asset_iou(cfg, scene, truth_scene), "turn_deg": offset,
            "colour_error": float(np.mean([o["colour_error"] for o in objects])), "objects": objects, "picture": picture}


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10.0 * torch.log10(((a - b) ** 2).mean()))


def score_refined(run_dir: Path, prompt: str) -> Dict:
    """The mesh stage's albedo renders against the ground truth (at the mesh's best turn) and against the
    NeRF's renders from the same eval views; the NeRF's PSNR against the ground truth for comparison."""
    cfg, scene = api.load_run(run_dir)
    mesh_cfg = load_saved_config(run_dir / REFINE_DIR / "config.yaml")
    mesh = scene_render_fn(mesh_cfg, *load_refined(mesh_cfg, run_dir / REFINE_DIR))
    truth_scene, cameras = parse_caption(prompt), orbit_cameras(cfg.cameras, 4, RESOLUTION)
    iou, offset = best_rotation_iou(mesh, truth_scene, cfg.cameras, resolution=RESOLUTION)
    (nerf_rgb, nerf_mask), (mesh_rgb, mesh_mask) = scene_render_fn(cfg, scene)(cameras), mesh(cameras)
    truth = ground_truth(truth_scene, cfg.cameras, torch.cat([c.azimuth for c in cameras]) - offset, RESOLUTION).rgb
    return {"iou": iou, "psnr": psnr(mesh_rgb, truth), "nerf_psnr": psnr(nerf_rgb, truth), "psnr_to_nerf": psnr(mesh_rgb, nerf_rgb),
            "iou_to_nerf": silhouette_iou(mesh_mask, nerf_mask), "picture": torch.cat(list(mesh_rgb), dim=1)}


def prompt_set(prompt: str) -> str:
    return next((name for name, prompts in PROMPTS.items() if prompt in prompts), "other")


def method_runner(method: str, overrides: Sequence[str], out_dir: Path):
    """(prompt, run_dir) -> RunResult: a per-prompt run of the method config (a shipped name or a YAML path)."""
    def run(prompt: str, run_dir: Path):
        run_overrides = [*method_overrides(method, prompt, overrides, out_dir), "export.video_frames=0"]
        return api.generate(prompt, method, run_overrides, run_dir=run_dir)

    return run


def generator_runner(generator: Path, overrides: Sequence[str]):
    """(prompt, run_dir) -> RunResult: an asset from the amortized generator folder, in one forward pass. A prompt
    whose field is empty has no mesh to write; its run folder still holds the field, which scores 0."""
    def run(prompt: str, run_dir: Path):
        try:
            return api.generate_with(generator, prompt, [*overrides, "export.video_frames=0"], run_dir)
        except ExportError as exc:
            log.warning("%s: %s", prompt, exc)
            return RunResult(run_dir, 0, 0.0)

    return run


def run_quality(methods: Sequence[str], overrides: Sequence[str], out_dir: Path, sets: Sequence[str] = tuple(PROMPTS),
                prompts: Sequence[str] = (), refine: bool = False, generators: Sequence[Path] = ()) -> List[Dict]:
    """Every prompt of ``sets`` (or the world captions ``prompts``) through every method config (a
    shipped name or a YAML path) and every amortized generator folder, and with ``refine`` through the mesh stage."""
    rows, pictures = [], []
    jobs = [(prompt_set(p), p) for p in prompts] or [(name, p) for name in sets for p in PROMPTS[name]]
    makers = [(Path(m).stem, method_runner(m, overrides, out_dir)) for m in methods]
    makers += [(f"generator:{Path(g).name}", generator_runner(g, overrides)) for g in generators]
    for name, make in makers:
        for set_name, prompt in jobs:
            run_dir = out_dir / name.replace(":", "-") / prompt.replace(" ", "-")
            began = time.perf_counter()
            result = make(prompt, run_dir)
            wall = time.perf_counter() - began
            scores = score_run(result.run_dir, prompt)
            picture = scores.pop("picture")
            cfg = load_saved_config(result.run_dir / "config.yaml")
            objective = "gan" if cfg.amortize.mode == "gan" else cfg.objective.name  # ET3D's generators have no objective
            rows.append({"method": name, "objective": objective, "set": set_name, "prompt": prompt,
                         **scores, "steps": result.steps, "wall_s": wall, "s_per_step": result.seconds_per_step})
            if refine:
                began = time.perf_counter()
                refined = api.refine(result.run_dir, overrides=[*overrides, "export.video_frames=0"])
                rows[-1]["refine"] = {**score_refined(result.run_dir, prompt), "steps": refined.steps,
                                      "wall_s": time.perf_counter() - began, "s_per_step": refined.seconds_per_step}
                picture = torch.cat([picture[:RESOLUTION], rows[-1]["refine"].pop("picture"), picture[RESOLUTION:]])
            pictures.append(picture)
    (out_dir / "quality.json").write_text(json.dumps(rows, indent=2))
    write_image(torch.cat(pictures).numpy(), out_dir / "quality.png")
    return rows


def format_table(rows: List[Dict]) -> str:
    lines = [f"{'method':<16} {'set':<9} {'prompt':<44} {'IoU':>5} {'GLB IoU':>7} {'colour':>6} {'steps':>5} {'s/step':>6} {'wall s':>7}"]
    for r in rows:
        lines.append(f"{r['method'] + ' (' + r['objective'] + ')':<16} {r['set']:<9} {r['prompt']:<44} {r['iou']:>5.2f} "
                     f"{r['mesh_iou']:>7.2f} "
                     f"{r['colour_error']:>6.3f} {r['steps']:>5d} {r['s_per_step']:>6.2f} {r['wall_s']:>7.1f}")
        if len(r["objects"]) > 1:
            parts = "  ".join(f"object {k + 1}: IoU {o['iou']:.2f} colour {o['colour_error']:.3f}" for k, o in enumerate(r["objects"]))
            lines.append(f"{'':<27}{parts}")
        if "refine" in r:
            m = r["refine"]
            lines.append(f"{'':<27}mesh stage: IoU {m['iou']:.2f} PSNR {m['psnr']:.2f} dB (NeRF {m['nerf_psnr']:.2f} dB); "
                         f"against the NeRF: IoU {m['iou_to_nerf']:.2f} PSNR {m['psnr_to_nerf']:.2f} dB; "
                         f"{m['steps']} steps, {m['s_per_step']:.2f} s/step, {m['wall_s']:.1f} s")
    return "\n".join(lines)
