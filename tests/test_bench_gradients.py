"""`sds3d bench gradients`: the ring of pixels it reads, and a perfect guide asking nothing at its data."""

import math

import torch
from typer.testing import CliRunner

from sds3d.bench.gradients import format_gradients, ring, run_gradients, with_albedo_gain
from sds3d.cli import app
from sds3d.world.scenes import BACKGROUND


def test_ring_is_the_band_just_outside_the_mask():
    mask = torch.zeros(1, 7, 7, dtype=torch.bool)
    mask[0, 3, 3] = True
    band = ring(mask, 1)
    expected = torch.zeros(1, 7, 7, dtype=torch.bool)
    expected[0, 2:5, 2:5] = True
    expected[0, 3, 3] = False
    assert torch.equal(band, expected)


def test_albedo_gain_scales_the_lit_object_and_keeps_the_background_share():
    background = torch.tensor(BACKGROUND)
    lit = torch.tensor([0.6, 0.1, 0.1])
    rgb = torch.stack([lit, 0.5 * lit + 0.5 * background, background]).view(1, 1, 3, 3)
    coverage = torch.tensor([1.0, 0.5, 0.0]).view(1, 1, 3)
    scaled = with_albedo_gain(rgb, coverage, 1.5)[0, 0]
    assert torch.allclose(scaled[0], 1.5 * lit)
    assert torch.allclose(scaled[1], 0.5 * 1.5 * lit + 0.5 * background)
    assert torch.allclose(scaled[2], background)
    assert torch.equal(with_albedo_gain(rgb, coverage, 4.0).clamp(0, 1), with_albedo_gain(rgb, coverage, 4.0))


def test_the_exact_guide_asks_back_towards_the_true_albedo():
    rows = run_gradients(["base"], "a blue sphere", ["guide.model=exact:world@16", "render.width=16", "render.height=16"], draws=2,
                         albedo_gains=[0.8, 1.25])
    assert [r["albedo_gain"] for r in rows] == [0.8, 1.25]
    assert rows[0]["brighter"] > 0.0 > rows[1]["brighter"]


def test_the_exact_guide_asks_nothing_at_the_ground_truth():
    rows = run_gradients(["base", "sjc"], "a blue sphere", ["guide.model=exact:world@16", "render.width=16", "render.height=16"], draws=2)
    assert [(r["method"], r["objective"]) for r in rows] == [("base", "sds"), ("sjc", "sjc")]
    for row in rows:  # the bundled prior's figures on this caption are about 0.1 to 1
        assert row["norm_object"] < 1e-2 and row["norm_background"] < 1e-2
        assert abs(row["opacity_ring"]) < 1e-3
        assert max(abs(c) for c in row["colour_object"]) < 1e-2 and abs(row["brighter"]) < 1e-2
        assert math.isnan(row["opacity_far"]) or abs(row["opacity_far"]) < 1e-3  # nan: no far background at 16 px
    assert rows[0]["weight_for_sds_scale"] == 1.0
    table = format_gradients(rows, "a blue sphere")
    assert "sjc" in table and "a blue sphere" in table


def test_a_caption_outside_the_world_fails_before_loading():
    result = CliRunner().invoke(app, ["bench", "gradients", "-p", "a red teapot"])
    assert result.exit_code != 0
    assert "a red teapot" in str(result.exception) + result.output
