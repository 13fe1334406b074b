"""Amortized score distillation (ATT3D): the per-prompt loop of ``sds3d.train``, run over a text-conditioned
generator that shows one training prompt per step, guided with that prompt's Conditions."""

from pathlib import Path
from typing import List, Optional, Sequence

import torch
import torch.nn as nn
from omegaconf import OmegaConf

from sds3d.amortize.adversarial import AdversarialObjective
from sds3d.amortize.generator import TextGenerator, training_embeddings
from sds3d.atomic import atomic_write
from sds3d.cameras import orbit_cameras
from sds3d.device import pick_device
from sds3d.errors import ConfigError
from sds3d.export import write_image
from sds3d.guides import load_guide
from sds3d.guides.prompts import PromptSet
from sds3d.render.background import Background
from sds3d.render.volume import VolumeRenderer
from sds3d.train import RunResult, Stage, regularisers, scheduled_group, train
from sds3d.views import render_view, to_uint8

GENERATOR_FILE = "generator.pt"
GAN_SAMPLES_FILE = "guide-samples.pt"  # mode gan: the guide's samples of every prompt, drawn once per run


class AmortizedPrompts:
    """Every training prompt's PromptSet; hands out the Conditions of the prompt the generator shows this step."""

    layout = None

    def __init__(self, guide, cfg, generator: TextGenerator):
        self.generator = generator
        self.sets = [PromptSet(guide, OmegaConf.merge(cfg.prompt, {"text": text})) for text in cfg.amortize.prompts]

    def conditions(self, cameras, semantic: Optional[torch.Tensor] = None):
        return self.sets[self.generator.input_codes.index].conditions(cameras, semantic)


def check_amortize_config(cfg) -> None:
    """What an amortized run cannot take, refused before the guide loads."""
    if not cfg.amortize.prompts:
        raise ConfigError("amortize.prompts is empty", hint="sds3d amortize PROMPTS_FILE (one prompt a line)")
    refused = {"scene.particles": (cfg.scene.particles != 1, "1"), "layout.file": (bool(cfg.layout.file), '""'),
               "render.latent_warmup_steps": (cfg.render.latent_warmup_steps > 0, "0"),
               "train.picard.window": (cfg.train.picard.window > 1, "0")}
    for key, (bad, fix) in refused.items():
        if bad:
            raise ConfigError(f"an amortized generator does not take {key}", hint=f"{key}={fix}")
    if cfg.amortize.mode == "gan" and cfg.objective.colour_t_max < 1:
        raise ConfigError("amortize.mode gan has no timestep to gate colour by (objective.colour_t_max)",
                          hint="objective.colour_t_max=1.0, as configs/amortize-gan.yaml sets it")


def build_generator(cfg, embedding_dim: int) -> TextGenerator:
    return TextGenerator(cfg.scene, len(cfg.amortize.prompts), embedding_dim, cfg.amortize.code_dim, cfg.seed)


def generator_stage(cfg, guide, run_dir: Path) -> Stage:
    embeddings = training_embeddings(guide, cfg.amortize.prompts)
    generator = build_generator(cfg, embeddings.shape[1])
    generator.input_codes.set_embeddings(embeddings)
    scene = nn.ModuleDict({"field": generator, "background": Background(cfg.render.background)})
    network = [*generator.network.parameters(), *generator.input_codes.parameters()]
    groups = [scheduled_group(generator.encoding.parameters(), cfg.train.lr_encoding), scheduled_group(network, cfg.train.lr_network),
              {"params": scene["background"].parameters(), "lr": cfg.train.lr_background}]
    renderer = VolumeRenderer(cfg.render, cfg.scene.radius, cfg.render.occupancy_grid)
    objective = None
    if cfg.amortize.mode == "gan":
        objective = AdversarialObjective(cfg, guide, generator, cfg.amortize.prompts, Path(run_dir) / GAN_SAMPLES_FILE)
    return Stage(scene, renderer, groups, lambda out, step: regularisers(out, step, cfg.train),
                 lambda run_dir, timer: [save_generator(scene, cfg.amortize.prompts, run_dir)],
                 prompts=AmortizedPrompts(guide, cfg, generator),
                 validate=lambda run_dir, step: save_prompt_grid(renderer, scene, cfg, run_dir, step), objective=objective)


def save_prompt_grid(renderer, scene: nn.ModuleDict, cfg, run_dir: Path, step: int) -> Path:
    """progress/step-XXXXX.png: one row of orbit views per validation prompt (amortize.val_prompts of the training
    prompts, evenly spaced through their list)."""
    generator, shown = scene["field"], scene["field"].input_codes.index
    cameras = orbit_cameras(cfg.cameras, cfg.train.val_views, cfg.train.val_resolution)
    rows = []
    for index in validation_prompts(generator.prompts, cfg.amortize.val_prompts):
        generator.show(index)
        rows.append(torch.cat([render_view(renderer, scene, camera).rgb[0] for camera in cameras], dim=1))
    generator.show(shown)
    return write_image(to_uint8(torch.cat(rows, dim=0)), run_dir / "progress" / f"step-{step:05d}.png")


def validation_prompts(prompts: int, rows: int) -> List[int]:
    return sorted(set(torch.linspace(0, prompts - 1, min(rows, prompts)).round().long().tolist()))


def save_generator(scene: nn.ModuleDict, prompts: Sequence[str], run_dir: Path) -> Path:
    """<run_dir>/generator.pt: the weights `sds3d generate` loads (with config.yaml beside them) and the prompts
    they were trained on."""
    path = Path(run_dir) / GENERATOR_FILE
    with atomic_write(path) as tmp:
        torch.save({"scene": scene.state_dict(), "prompts": list(prompts)}, tmp)
    return path


def train_generator(cfg, run_dir: Path, resume: bool = False, should_stop=None) -> RunResult:
    """Trains (or with ``resume`` continues) the generator of ``cfg.amortize.prompts`` in ``run_dir``."""
    check_amortize_config(cfg)
    guide = load_guide(cfg.guide, pick_device(cfg.device))
    return train(cfg, run_dir, resume, should_stop, build_stage=lambda cfg, layout: generator_stage(cfg, guide, run_dir), guide=guide)
