"""The 2D playground (`sds3d image`): every objective on the tiny SD model, the bundled prior, a real
optimisation on the exact world denoiser, and the CLI command with its errors."""

import json
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from sds3d.errors import NonFiniteError
from sds3d.guides.exact import ExactDenoiserGuide
from sds3d.objectives import OBJECTIVES
from sds3d.playground import optimise_image
from test_cli import cli

EXACT = ["guide.model=exact:world@16", "device=cpu"]


def read(path: Path) -> np.ndarray:
    return imageio.imread(path)


def check_outputs(result, steps: int, frames: int, side: int):
    """image.png is side x side; progress.png holds ``frames`` of them, the last equal to image.png."""
    image, progress = read(result.image_path), read(result.progress_path)
    assert image.shape == (side, side, 3)
    assert progress.shape == (side, frames * side, 3)
    np.testing.assert_array_equal(progress[:, -side:], image)
    records = [json.loads(line) for line in (result.out_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, steps + 1))
    assert all(np.isfinite(r["loss"]) and "objective/t" in r for r in records)
    assert (result.out_dir / "config.yaml").is_file()
    assert not list(result.out_dir.glob("*.tmp*"))
    assert result.steps == steps and result.seconds_per_step > 0


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_every_objective_runs_on_the_tiny_model(tiny_config, tiny_sd_dir, tmp_path, name):
    # 16 px latent model: images are upscaled x16 to 256 px; auto space optimises the latent.
    result = optimise_image("a hamburger", tiny_config, [f"guide.model={tiny_sd_dir}", f"objective.name={name}",
                                                  "image.steps=3", "image.frames=3"], tmp_path / "out")
    check_outputs(result, steps=3, frames=3, side=256)


def test_image_space_on_a_latent_model_goes_through_the_vae(tiny_config, tiny_sd_dir, tmp_path):
    result = optimise_image("a hamburger", tiny_config, [f"guide.model={tiny_sd_dir}", "image.space=image", "image.steps=2",
                                                  "image.frames=2", "image.lr=0.5"], tmp_path / "out")
    check_outputs(result, steps=2, frames=2, side=256)
    assert np.abs(read(result.image_path).astype(int) - 128).max() > 0  # moved from the grey start


def test_bundled_prior_runs_in_image_space(tmp_path):
    result = optimise_image("a red cube", overrides=["device=cpu", "image.steps=3", "image.frames=3"], out_dir=tmp_path / "out")
    check_outputs(result, steps=3, frames=3, side=256)  # 32 px prior, x8
    assert np.abs(read(result.image_path).astype(int) - 128).max() > 0
    assert "image" in (result.out_dir / "config.yaml").read_text()


def distance_to_renders(image: np.ndarray, renders: torch.Tensor) -> float:
    """Mean squared distance of an image [r, r, 3] in [0, 1] to the nearest render [N, 3, r, r] in [-1, 1]."""
    x = torch.from_numpy(image).permute(2, 0, 1).float()
    return ((renders * 0.5 + 0.5) - x).pow(2).flatten(1).mean(1).min().item()


def test_sds_moves_a_grey_image_towards_the_prompt(tmp_path):
    """On the exact world denoiser, 100 SDS steps bring the grey start most of the way to a front view
    of the red cube, and make it red."""
    result = optimise_image("a red cube", overrides=[*EXACT, "image.steps=100", "image.lr=0.05"], out_dir=tmp_path / "out")
    image = read(result.image_path)[::16, ::16] / 255.0  # undo the x16 nearest upscale
    guide = ExactDenoiserGuide.from_spec("exact:world@16", torch.device("cpu"))
    renders = guide.images(int(guide.embed(["a red cube, front view"]).item()))
    grey = np.full_like(image, 0.5)
    assert distance_to_renders(image, renders) < 0.3 * distance_to_renders(grey, renders)
    red, green, blue = image.reshape(-1, 3).mean(0)
    assert red > green + 0.15 and red > blue + 0.15


def test_same_seed_same_image_other_seed_other_image(tmp_path):
    def image(name, seed):
        overrides = [*EXACT, "image.steps=10", f"seed={seed}"]
        return read(optimise_image("a red cube", overrides=overrides, out_dir=tmp_path / name).image_path)

    first = image("a", 0)
    np.testing.assert_array_equal(first, image("b", 0))
    assert not np.array_equal(first, image("c", 1))


def test_non_finite_loss_stops_with_the_step(tmp_path):
    with pytest.raises(NonFiniteError, match="at step 0"):
        optimise_image("a red cube", overrides=[*EXACT, "objective.weight=.inf"], out_dir=tmp_path / "out")


def test_cli_writes_a_timestamped_folder(monkeypatch, capsys, tmp_path):
    code, out, _ = cli(monkeypatch, capsys, "image", "a red cube", *EXACT, "image.steps=4", "image.frames=2", f"out_dir={tmp_path}")
    assert code == 0
    [folder] = tmp_path.iterdir()
    assert folder.name.startswith("image-a-red-cube-")
    assert str(folder / "image.png") in out and str(folder / "progress.png") in out and "4 steps" in out
    assert read(folder / "progress.png").shape == (256, 512, 3)


def test_cli_out_option_picks_the_folder(monkeypatch, capsys, tmp_path):
    code, _, _ = cli(monkeypatch, capsys, "image", *EXACT, "image.steps=2", "a red cube", "--out", tmp_path / "mine")
    assert code == 0
    assert (tmp_path / "mine" / "image.png").is_file()


@pytest.mark.parametrize("override, message, hint", [
    ("image.bogus=1", "unknown config key 'image.bogus'", "valid keys in 'image': steps, lr, space, frames, azimuth"),
    ("guide.model=./no-such-model", "model folder './no-such-model' does not exist", "guide.model takes a local diffusers folder"),
    ("image.space=pixels", "image.space: unknown value 'pixels'", "choose one of: auto, image, latent"),
], ids=["unknown-key", "missing-model", "bad-space"])
def test_cli_errors_exit_2_and_write_nothing(monkeypatch, capsys, tmp_path, override, message, hint):
    code, _, err = cli(monkeypatch, capsys, "image", "a red cube", "device=cpu", override, f"out_dir={tmp_path}")
    assert code == 2
    assert f"error: {message}" in err and f"hint: {hint}" in err
    assert not list(tmp_path.iterdir())


def test_cli_refuses_two_prompts(monkeypatch, capsys):
    code, _, err = cli(monkeypatch, capsys, "image", "a red cube", "a blue ball")
    assert code == 2
    assert "expected one prompt, got 2" in err and 'sds3d image "a red cube"' in err
