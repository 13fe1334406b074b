"""One contract over every entry of the objective registry: each objective states the inputs at which its
gradient must vanish (its fixed point), checked at the start, middle and end of a run so that annealed
recipes are covered too. An objective that joins the registry without a stated fixed point fails here."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
import torch
from objective_fakes import B, SHAPE, hand_alphas, make_conditions, objective_config

from sds3d.config import ASSETS_DIR
from sds3d.config_schema import OBJECTIVE_NAMES
from sds3d.guides.prompts import Regions
from sds3d.guides.stable_diffusion import StableDiffusionGuide
from sds3d.objectives import OBJECTIVES

TOTAL_STEPS = 100
STEPS = (0, 50, 99)


class PerfectDenoiser:
    """Whatever the prompt, the exact noise that took ``x0`` to x_t: the score of a guide whose only image is x0."""

    view_aware = False

    def __init__(self, x0: torch.Tensor):
        self.x0, self.alphas_cumprod, self.device = x0.detach(), hand_alphas(), torch.device("cpu")

    def predict_noise(self, x_t, t, embeddings):
        a = self.alphas_cumprod[t].view(-1, *([1] * (x_t.dim() - 1)))
        eps = (x_t - a.sqrt() * self.x0) / (1.0 - a).sqrt()
        return eps[None].expand(embeddings.shape[0], *eps.shape)


def one_image(name: str, *overrides: str, config: str | None = None, image_is_the_render: bool = True):
    """A guide whose only image is the render itself (score-matching objectives have nothing left to ask), or
    another image: a guide that cannot tell the prompt from the negative or the empty one."""
    def case(tiny_sd_dir):
        x = torch.randn(SHAPE)
        image = x if image_is_the_render else torch.randn(SHAPE)
        return PerfectDenoiser(image), make_conditions(), x, objective_config(name, *overrides, config=config)
    return case


def semantic_at_the_truth(tiny_sd_dir):
    guide, conditions, x, _ = one_image("sds")(tiny_sd_dir)
    semantic = torch.zeros(B, 3, 3, 2)
    semantic[:, :, 0, 0], semantic[:, :, 2, 1] = 0.9, 0.8
    regions = Regions(torch.stack([torch.full_like(conditions.cond, 5.0), torch.full_like(conditions.cond, 6.0)]), semantic)
    layout = ASSETS_DIR / "layouts" / "cube-left-of-sphere.yaml"
    return guide, replace(conditions, regions=regions), x, objective_config("semantic", f"layout.file={layout}")


def vsd_before_the_lora_moves(tiny_sd_dir):
    """The frozen UNet with the LoRA at its start (equal to the frozen model) and one embedding for every prompt."""
    guide = StableDiffusionGuide.from_pretrained(str(tiny_sd_dir), torch.device("cpu"), "fp32", cache_dir=os.environ["SDS3D_CACHE"])
    embedding = guide.embed(["a cat"]).expand(B, -1, -1)
    conditions = replace(make_conditions(), cond=embedding, negative=embedding, empty=embedding, no_view=embedding,
                         camera=torch.randn(B, 16))
    return guide, conditions, torch.randn(B, 4, 8, 8), objective_config("vsd", config="prolificdreamer")


# name -> a case (guide, conditions, x, objective config) at which the objective's gradient is zero
FIXED_POINTS = {
    "sds": one_image("sds"),
    "sjc": one_image("sjc", config="sjc"),
    "csd": one_image("csd", config="csd", image_is_the_render=False),  # its scales sum to zero at every step of the anneal
    "ism": one_image("ism", config="ism"),  # the inversion is exact, so eps_hat(x_t) is the path's own eps_s
    "bsd": one_image("bsd", config="bsd", image_is_the_render=False),  # c = 0, so the min-norm mix takes all of c
    "csm": one_image("csm", config="csm", image_is_the_render=False),  # the classifier direction alone, zero here
    # NFSD keeps eps("") below the switch (its domain term); above it nothing is left once prompts agree
    "nfsd": one_image("nfsd", "objective.t_min=0.2", config="nfsd", image_is_the_render=False),
    "vsd": vsd_before_the_lora_moves,
    "semantic": semantic_at_the_truth,
}


def test_every_registered_objective_states_its_fixed_point_and_is_a_config_choice():
    assert set(FIXED_POINTS) == set(OBJECTIVES)
    assert tuple(OBJECTIVES) == OBJECTIVE_NAMES


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_the_gradient_vanishes_at_the_stated_fixed_point(name, tiny_sd_dir):
    guide, conditions, x, config = FIXED_POINTS[name](tiny_sd_dir)
    objective = OBJECTIVES[name](config, guide, TOTAL_STEPS)
    for step in STEPS:
        torch.manual_seed(step)
        probe = x.clone().requires_grad_(True)
        objective(guide, probe, conditions, step).loss.backward()
        assert probe.grad.abs().max() < 1e-5, (name, step)
