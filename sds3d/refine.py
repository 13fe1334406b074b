"""The mesh stage (Magic3D's second stage): a finished NeRF run -> a refined, textured mesh in <run>/refine/.

The NeRF's surface (marching cubes at ``refine.mesh_resolution``, decimated to ``export.max_faces``)
becomes a ``MeshScene`` whose vertex offsets start at zero and whose texture field is a copy of the
NeRF's albedo branch, so the stage starts from what the NeRF shows. Both are optimised with the run's
objective through the rasterizer at ``refine.width`` x ``refine.height``, by the NeRF stage's loop
(``train.train`` with ``mesh_stage``); the folder has the same layout as a run's.
"""

import copy
from functools import partial
from pathlib import Path
from typing import Dict, List, Tuple

import torch
import torch.nn as nn
from omegaconf import DictConfig, OmegaConf

from sds3d.checkpoint import load_checkpoint, read_checkpoint
from sds3d.config import schedule
from sds3d.device import pick_device
from sds3d.export.asset import mesh_asset, nerf_surface, write_asset
from sds3d.render.background import Background
from sds3d.render.raster import MeshRenderer
from sds3d.scene.mesh import MeshScene, TextureField
from sds3d.timing import PartTimer
from sds3d.train import RunResult, Stage, generated_code, separate_objects_layout, train
from sds3d.views import save_turntable

REFINE_DIR = "refine"


def stage_config(cfg: DictConfig) -> DictConfig:
    """The config the mesh stage trains with: the NeRF run's, with train.steps and the render size from ``refine``."""
    merged = OmegaConf.merge(cfg, {"train": {"steps": cfg.refine.steps},
                                   "render": {"width": cfg.refine.width, "height": cfg.refine.height}})
    OmegaConf.set_readonly(merged, True)
    return merged


def starting_surface(nerf_scene: nn.ModuleDict, cfg, resolution: int) -> MeshScene:
    """The NeRF field's surface (marching cubes at ``resolution``, decimated to export.max_faces) and albedo
    as a mesh scene, on the CPU: at export.resolution, the asset a NeRF run exports, before baking."""
    field = nerf_scene["field"]
    return mesh_asset(nerf_surface(field, cfg.scene.radius, cfg.cameras, cfg.export, resolution), field)


def mesh_stage(cfg, surface: MeshScene, background: Background) -> Stage:
    scene = nn.ModuleDict({"field": surface, "background": background})
    groups = [
        {"params": [surface.offsets], "lr": cfg.refine.lr_offsets},
        {"params": surface.texture.parameters(), "lr": cfg.refine.lr_texture},
        {"params": background.parameters(), "lr": cfg.train.lr_background},
    ]
    return Stage(scene, MeshRenderer(cfg.render, cfg.refine.rasterizer), groups, partial(mesh_regularisers, surface, cfg.refine),
                 partial(export_refined, scene, cfg))


def mesh_regularisers(surface: MeshScene, refine_cfg, out, step: int) -> Dict[str, torch.Tensor]:
    """Laplacian smoothing and normal consistency, weighted by their (scheduled) lambdas."""
    terms = {}
    for name, loss in (("laplacian", surface.laplacian_loss), ("normal_consistency", surface.normal_consistency_loss)):
        weight = schedule(getattr(refine_cfg, f"lambda_{name}"), step, refine_cfg.steps)
        if weight > 0:
            terms[name] = weight * loss()
    return terms


def export_refined(scene: nn.ModuleDict, cfg, run_dir: Path, timer: PartTimer) -> List[Path]:
    """The refined mesh as mesh.<export.formats>, its texture field baked (``write_asset``), and its turntable."""
    surface = scene["field"]
    device = surface.offsets.device
    with timer("mesh"):
        paths = write_asset(surface.to_trimesh(), lambda points: surface.albedo(points.to(device)), cfg.export, run_dir)
    if cfg.export.video_frames > 0:
        with timer("video"):
            renderer = MeshRenderer(cfg.render, cfg.refine.rasterizer)
            paths.append(save_turntable(renderer, scene, cfg.cameras, cfg.export, run_dir / "video.mp4"))
    return paths


def refine(cfg: DictConfig, nerf_scene: nn.ModuleDict, run_dir: Path) -> RunResult:
    """The mesh stage of the NeRF run in ``run_dir`` (config ``cfg``, trained ``nerf_scene``), into run_dir/refine."""
    cfg = stage_config(cfg)
    surface = starting_surface(nerf_scene, cfg, cfg.refine.mesh_resolution)
    background = copy.deepcopy(nerf_scene["background"]).cpu()
    return train(cfg, Path(run_dir) / REFINE_DIR, build_stage=lambda cfg, layout: mesh_stage(cfg, surface, background))


def saved_surface(ckpt_path: Path, cfg) -> MeshScene:
    """A mesh scene shaped like the one saved in a mesh-stage checkpoint (weights not yet loaded)."""
    state = read_checkpoint(ckpt_path)["scene"]
    layout = separate_objects_layout(cfg)
    texture = TextureField(cfg.scene, layout.region_codes if layout is not None else generated_code(cfg))
    return MeshScene(state["field.base_vertices"], state["field.faces"], texture)


def resume_refine(cfg: DictConfig, refine_dir: Path) -> RunResult:
    """Continue a mesh stage from ``refine_dir/ckpt/last.pt`` with its saved config ``cfg`` (whose refine.steps
    may have been raised)."""
    cfg = stage_config(cfg)
    surface = saved_surface(refine_dir / "ckpt" / "last.pt", cfg)
    background = Background(cfg.render.background)
    return train(cfg, refine_dir, resume=True, build_stage=lambda cfg, layout: mesh_stage(cfg, surface, background))


def load_refined(cfg: DictConfig, refine_dir: Path) -> Tuple[nn.ModuleDict, MeshRenderer]:
    """A mesh stage's scene with its checkpoint's weights, on the config's device, and its renderer."""
    ckpt_path = refine_dir / "ckpt" / "last.pt"
    scene = nn.ModuleDict({"field": saved_surface(ckpt_path, cfg), "background": Background(cfg.render.background)})
    load_checkpoint(ckpt_path, scene, restore_rng=False)
    return scene.to(pick_device(cfg.device)), MeshRenderer(cfg.render, cfg.refine.rasterizer)
