"""The NeRF stage's regularisers pinned to their formulas: where each acts on the opacity."""

import pytest
import torch

from sds3d.config import load_config
from sds3d.render.output import RenderOutput
from sds3d.train import regularisers


def opacity_slopes(term: str, values=(0.0, 0.5, 1.0)):
    cfg = load_config(overrides=["train.lambda_sparsity=0", "train.lambda_haze=0", f"train.lambda_{term}=2.0"], prompt="a red cube")
    opacity = torch.tensor(values).view(1, 1, -1, 1).requires_grad_(True)
    out = RenderOutput(rgb=torch.zeros(1, 1, len(values), 3), opacity=opacity, depth=torch.zeros_like(opacity))
    terms = regularisers(out, 0, cfg.train)
    assert set(terms) == {term}
    terms[term].backward()
    return opacity.grad.flatten() * len(values) / 2.0  # per pixel, per unit weight


def test_sparsity_is_flat_at_zero_opacity():
    slopes = opacity_slopes("sparsity")
    assert slopes[0] == 0.0
    assert slopes[1] == pytest.approx(0.5 / (0.25 + 0.01) ** 0.5)


def test_haze_is_steepest_at_zero_opacity():
    slopes = opacity_slopes("haze")
    assert slopes.tolist() == pytest.approx([0.5 / 0.01**0.5, 0.5 / 0.51**0.5, 0.5 / 1.01**0.5])
    assert slopes[0] / slopes[2] > 10.0
