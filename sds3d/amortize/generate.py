"""An asset from a trained generator: the prompt's embedding, one forward pass of the mapping to the field, then the
export every run ends with, into a run folder like `sds3d run`'s (config.yaml, ckpt/last.pt, mesh.glb)."""

from pathlib import Path
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn

from sds3d.amortize.generator import pooled
from sds3d.amortize.train import GENERATOR_FILE, build_generator
from sds3d.checkpoint import save_checkpoint
from sds3d.config import load_saved_config, save_config
from sds3d.device import pick_device
from sds3d.errors import CheckpointError, ConfigError
from sds3d.guides import load_text_embedder
from sds3d.render.background import Background
from sds3d.timing import PartTimer
from sds3d.train import RunResult
from sds3d.views import export_meshes


def load_generator(folder: Path, overrides: Sequence[str] = (), values: Optional[dict] = None) -> Tuple[object, nn.ModuleDict]:
    """A generator folder's config (with ``values`` and ``overrides``, as ``load_saved_config`` takes them) and its
    scene {"field": TextGenerator, "background"}, on CPU."""
    folder = Path(folder)
    if not (folder / "config.yaml").is_file() or not (folder / GENERATOR_FILE).is_file():
        raise ConfigError(f"'{folder}' is not a generator folder: it needs config.yaml and {GENERATOR_FILE}",
                          hint="train one with `sds3d amortize PROMPTS_FILE`, or use the bundled one (the default)")
    cfg = load_saved_config(folder / "config.yaml", overrides, values)
    try:
        payload = torch.load(folder / GENERATOR_FILE, map_location="cpu", weights_only=True)
        state = payload["scene"]
        scene = nn.ModuleDict({"field": build_generator(cfg, state["field.input_codes.embeddings"].shape[1]),
                               "background": Background(cfg.render.background)})
        scene.load_state_dict(state)
    except Exception as exc:  # torch.load and load_state_dict raise several kinds for a damaged or foreign file
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"cannot load the generator '{folder / GENERATOR_FILE}': {reason}",
                              hint="the file is damaged or belongs to another config.yaml; train the generator again") from exc
    return cfg, scene


def generate_asset(cfg, scene: nn.ModuleDict, run_dir: Path, timer: PartTimer) -> RunResult:
    """``cfg`` is the generator's config with this prompt as prompt.text: the prompt's field, saved and exported."""
    device = pick_device(cfg.device)
    with timer("setup"):
        embedding = pooled(load_text_embedder(cfg.guide, device).embed([cfg.prompt.text]))[0]
    with timer("generate"):
        field = scene["field"].to(device).field_for(embedding)
    asset = nn.ModuleDict({"field": field, "background": scene["background"]}).to(device)
    save_config(cfg, run_dir / "config.yaml")
    save_checkpoint(run_dir / "ckpt" / "last.pt", 0, asset)
    outputs = export_meshes(asset, cfg, run_dir, video=cfg.export.video_frames > 0, timer=timer)
    return RunResult(run_dir, 0, 0.0, outputs, seconds=dict(timer.seconds))
