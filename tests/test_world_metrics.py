"""The ground-truth checker on hand-made masks and on renders of the world itself."""

import pytest
import torch

from sds3d.cameras import make_cameras, sample_cameras
from sds3d.config import load_config
from sds3d.world.metrics import (best_rotation_iou, colour_error, foreground_mask, per_object_scores, score_sample,
                                 silhouette_iou)
from sds3d.world.render import render_scenes
from sds3d.world.scenes import parse_caption

CAMERAS = load_config(prompt="x").cameras
PAIR = "a red cube to the left of a blue cone"


def square(columns: slice) -> torch.Tensor:
    mask = torch.zeros(8, 8)
    mask[:, columns] = 1.0
    return mask


def world_render_fn(caption: str, turn: float = 0.0):
    """A render_fn showing the caption's scene turned by ``turn`` degrees about z (the camera moves by -turn)."""
    scene = parse_caption(caption)

    def render(cameras):
        rgb, masks = [], []
        for c in cameras:
            out = render_scenes([scene], make_cameras(c.elevation, c.azimuth - turn, c.distance, c.fovy, c.width, c.height),
                                shading="albedo")
            rgb.append(out.rgb)
            masks.append(out.mask)
        return torch.cat(rgb), torch.cat(masks)

    return render


def test_iou_of_identical_masks_is_one():
    assert silhouette_iou(square(slice(2, 6)), square(slice(2, 6))) == 1.0


def test_iou_of_an_empty_render_is_zero():
    assert silhouette_iou(torch.zeros(8, 8), square(slice(2, 6))) == 0.0


def test_iou_of_two_empty_masks_is_one():
    assert silhouette_iou(torch.zeros(2, 8, 8), torch.zeros(2, 8, 8)) == 1.0


def test_iou_of_half_overlapping_squares():
    # columns 0-3 and 2-5: 2 shared columns of 6 covered
    assert silhouette_iou(square(slice(0, 4)), square(slice(2, 6))) == pytest.approx(1 / 3)


def test_iou_pools_all_views():
    pred = torch.stack([square(slice(0, 4)), square(slice(0, 4))])
    true = torch.stack([square(slice(0, 4)), torch.zeros(8, 8)])
    assert silhouette_iou(pred, true) == pytest.approx(0.5)


def test_foreground_mask_marks_what_differs_from_the_background():
    rgb = torch.ones(4, 4, 3)
    rgb[1, 2] = torch.tensor([0.85, 0.12, 0.10])
    rgb[3, 3] = torch.tensor([0.95, 0.95, 0.95])  # within tolerance of white
    expected = torch.zeros(4, 4)
    expected[1, 2] = 1.0
    assert torch.equal(foreground_mask(rgb), expected)


def test_colour_error_of_identical_images_is_zero():
    rgb = torch.rand(8, 8, 3)
    assert colour_error(rgb, rgb, square(slice(0, 4)), square(slice(0, 4))) == 0.0


def test_colour_error_of_a_red_shift():
    true = torch.full((8, 8, 3), 0.5)
    pred = true.clone()
    pred[..., 0] += 0.3
    assert colour_error(pred, true, torch.ones(8, 8), torch.ones(8, 8)) == pytest.approx(0.1)


def test_colour_error_counts_only_the_overlap():
    true = torch.zeros(8, 8, 3)
    pred = true.clone()
    pred[:, 4:] = 1.0  # wrong only where the true mask is empty
    assert colour_error(pred, true, torch.ones(8, 8), square(slice(0, 4))) == 0.0


def test_colour_error_without_overlap_is_one():
    rgb = torch.zeros(8, 8, 3)
    assert colour_error(rgb, rgb, square(slice(0, 4)), square(slice(4, 8))) == 1.0


def test_best_rotation_iou_tells_a_pair_from_itself_turned_half_round_with_its_colours_swapped():
    caption = "a red sphere to the left of a blue sphere"  # the same silhouette at turns 0 and 180
    iou, offset = best_rotation_iou(world_render_fn(caption, turn=180.0), parse_caption(caption), CAMERAS,
                                    rotations=12, resolution=32)
    assert offset == 180.0 and iou > 0.99


def test_best_rotation_iou_finds_the_turn_of_a_pair():
    iou, offset = best_rotation_iou(world_render_fn(PAIR, turn=120.0), parse_caption(PAIR), CAMERAS,
                                    rotations=12, resolution=32)
    assert offset == 120.0
    assert iou > 0.99


def test_per_object_scores_blame_the_object_with_the_wrong_colour():
    scores = per_object_scores(world_render_fn("a red cube to the left of a green cone"), parse_caption(PAIR), CAMERAS,
                               offset_deg=0.0, resolution=32)
    assert [s["iou"] for s in scores] == pytest.approx([1.0, 1.0], abs=0.02)
    assert scores[0]["colour_error"] < 0.01
    assert scores[1]["colour_error"] > 0.2  # blue (0.12, 0.25, 0.85) against green (0.15, 0.65, 0.20)


def sample_image(caption: str, seed: int = 123) -> torch.Tensor:
    """A ground-truth render [32, 32, 3] from a camera that is not among score_sample's candidates."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        cameras = sample_cameras(CAMERAS, 32, 32, batch_size=1)
    return render_scenes([parse_caption(caption)], cameras).rgb[0]


def test_score_sample_passes_a_render_of_its_own_caption():
    result = score_sample(sample_image("a red sphere"), "a red sphere", CAMERAS, candidates=16)
    assert result["passed"]
    assert result["iou"] > 0.8


def test_score_sample_own_iou_sees_a_cube_drawn_at_the_wrong_turn():
    def view(azimuth: float):
        return make_cameras(torch.tensor([15.0]), torch.tensor([azimuth]), torch.tensor([1.75]), torch.tensor([55.0]), 32, 32)

    face_on = render_scenes([parse_caption("a red cube")], view(0.0)).rgb[0]
    right = score_sample(face_on, "a red cube", CAMERAS, candidates=16, camera=view(0.0))
    turned = score_sample(face_on, "a red cube", CAMERAS, candidates=16, camera=view(45.0))
    assert right["own_iou"] == pytest.approx(1.0)
    assert turned["own_iou"] < 0.9 and turned["iou"] == right["iou"]  # the best-of-candidates IoU cannot tell
    assert "own_iou" not in score_sample(face_on, "a red cube", CAMERAS, candidates=16)


def test_score_sample_fails_another_colour():
    result = score_sample(sample_image("a blue sphere"), "a red sphere", CAMERAS, candidates=16)
    assert not result["passed"]
    assert result["colour_error"] > 0.3


def test_score_sample_fails_an_empty_image():
    result = score_sample(torch.ones(32, 32, 3), "a red sphere", CAMERAS, candidates=16)
    assert not result["passed"]
    assert result["iou"] == 0.0
