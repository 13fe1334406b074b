"""Amortized text-to-3D: `sds3d amortize` trains one generator over prompts, `sds3d generate` makes an asset from it."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import trimesh
from typer.testing import CliRunner

from sds3d import api
from sds3d.amortize import adversarial
from sds3d.amortize.generate import load_generator
from sds3d.amortize.generator import TextGenerator
from sds3d.bench import quality
from sds3d.cameras import orbit_cameras
from sds3d.cli import app
from sds3d.config import load_config
from sds3d.errors import ConfigError
from sds3d.views import render_view
from sds3d.render.volume import VolumeRenderer


ROOT = Path(__file__).resolve().parent.parent
VALIDATOR = ROOT / ".ci" / "node_modules" / "gltf-validator"


@pytest.fixture(scope="module")
def exact_run(small_run):
    """``small_run`` on the exact world guide at 16 px, untextured."""
    return [*small_run, "guide.model=exact:world@16", "export.texture=false", "scene.occupancy.resolution=16"]



def prompts_file(folder: Path, *prompts: str) -> Path:
    path = folder / "prompts.txt"
    path.write_text("\n".join(prompts) + "\n")
    return path


@pytest.fixture(scope="module")
def two_prompt_generator(tmp_path_factory, exact_run) -> Path:
    """A generator trained on the exact world guide over a red cube and a blue sphere."""
    folder = tmp_path_factory.mktemp("amortize")
    api.amortize(prompts_file(folder, "a red cube", "a blue sphere"), "amortize",
                 [*exact_run, "train.steps=160", "train.val_every=80", "train.ckpt_every=80"], folder / "generator")
    return folder / "generator"


def mean_colour(cfg, scene) -> torch.Tensor:
    """The mean albedo over the covered pixels of four orbit views."""
    renderer = VolumeRenderer(cfg.render, cfg.scene.radius)
    outs = [render_view(renderer, scene, camera) for camera in orbit_cameras(cfg.cameras, 4, 24)]
    rgb, opacity = torch.cat([o.rgb for o in outs]), torch.cat([o.opacity for o in outs])
    covered = opacity[..., 0] > 0.5
    assert covered.any(), "the generated field is empty"
    return rgb[covered].mean(0)


def test_two_prompts_are_learnt_apart(two_prompt_generator, tmp_path):
    red = api.load_run(api.generate_with(two_prompt_generator, "a red cube", run_dir=tmp_path / "red").run_dir)
    blue = api.load_run(api.generate_with(two_prompt_generator, "a blue sphere", run_dir=tmp_path / "blue").run_dir)
    red_rgb, blue_rgb = mean_colour(*red), mean_colour(*blue)
    assert red_rgb[0] > red_rgb[2] + 0.2 and blue_rgb[2] > blue_rgb[0] + 0.2, (red_rgb, blue_rgb)


def test_the_run_folder_has_what_a_run_has(two_prompt_generator):
    folder = two_prompt_generator
    assert (folder / "generator.pt").is_file() and (folder / "ckpt" / "last.pt").is_file()
    assert [json.loads(line)["step"] for line in (folder / "metrics.jsonl").read_text().splitlines()][-1] == 160
    grids = sorted((folder / "progress").glob("step-*.png"))
    assert [g.name for g in grids] == ["step-00080.png", "step-00160.png"]
    cfg, _ = load_generator(folder)
    assert list(cfg.amortize.prompts) == ["a red cube", "a blue sphere"]


def test_every_prompt_is_shown_once_per_block_and_resumes_the_same(exact_run):
    cfg = load_config(prompt="x", overrides=exact_run)
    generator = TextGenerator(cfg.scene, prompts=5, embedding_dim=1, code_dim=4, seed=3)
    order = [generator.prompt_at(step) for step in range(15)]
    assert all(sorted(order[i:i + 5]) == list(range(5)) for i in (0, 5, 10))
    assert order[:5] != order[5:10] and order == [generator.prompt_at(step) for step in range(15)]


def test_generate_writes_a_run_folder_that_export_and_bench_take(two_prompt_generator, tmp_path, monkeypatch):
    result = CliRunner().invoke(app, ["generate", "a red cube", "--generator", str(two_prompt_generator), "--out",
                                      str(tmp_path / "run"), "export.formats=[glb,ply]"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    mesh = trimesh.load(run / "mesh.glb", force="mesh")
    assert len(mesh.faces) > 0 and (run / "mesh.ply").is_file()
    assert api.export(run, ["obj"]) == [run / "mesh.obj"]
    refined = api.refine(run, overrides=["refine.steps=2", "refine.width=16", "refine.height=16", "refine.mesh_resolution=24"])
    assert refined.steps == 2 and (run / "refine" / "mesh.glb").is_file()
    assert api.refine(run, overrides=["refine.steps=3"], resume=True).steps == 3
    monkeypatch.setattr(quality, "RESOLUTION", 16)
    rows = quality.run_quality([], ["export.resolution=16"], tmp_path / "bench", prompts=["a blue sphere"],
                               generators=[two_prompt_generator])
    assert [(r["method"], r["prompt"], r["steps"]) for r in rows] == [("generator:generator", "a blue sphere", 0)]
    assert 0.0 <= rows[0]["mesh_iou"] <= 1.0


def test_generated_glb_passes_the_khronos_gltf_validator(two_prompt_generator, tmp_path):
    if shutil.which("node") is None or not VALIDATOR.is_dir():
        pytest.skip("the glTF validator needs node and `npm ci --prefix .ci`")
    run = api.generate_with(two_prompt_generator, "a blue sphere", ["export.texture=true"], tmp_path / "run")
    done = subprocess.run(["node", str(ROOT / "tests" / "gltf_validate.mjs"), str(VALIDATOR), str(run.outputs[0])],
                          check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["issues"]["numErrors"] == 0


def test_resume_equals_an_uninterrupted_run(tmp_path, exact_run):
    prompts = prompts_file(tmp_path, "a red cube", "a green cone", "a blue sphere")
    overrides = [*exact_run, "train.steps=8", "train.ckpt_every=4"]
    whole = api.amortize(prompts, "amortize", overrides, tmp_path / "whole")
    calls = iter(range(100))
    cut = api.amortize(prompts, "amortize", overrides, tmp_path / "cut", should_stop=lambda: next(calls) >= 5)
    assert cut.interrupted and cut.steps == 5
    resumed = api.amortize(overrides=[], run_dir=tmp_path / "cut", resume=True)
    assert resumed.steps == 8
    a = torch.load(whole.run_dir / "generator.pt", weights_only=True)["scene"]
    b = torch.load(resumed.run_dir / "generator.pt", weights_only=True)["scene"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("content, problem", [
    ("", "has no prompts"),
    ("- prompt: a red cube\n  seed: 3\n", "own config, overrides or seed"),
    ("a red cube\na red zorb\n", "zorb"),
])
def test_bad_prompts_files_are_clear_errors(tmp_path, content, problem, exact_run):
    path = tmp_path / ("prompts.yaml" if content.startswith("-") else "prompts.txt")
    path.write_text(content)
    with pytest.raises(ConfigError, match=problem):
        api.amortize(path, "amortize", [*exact_run, "train.steps=2"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_missing_prompts_file_or_generator_folder_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(app, ["amortize", str(tmp_path / "nothing.txt")])
    assert result.exit_code != 0 and "does not exist" in str(result.exception)
    for folder in (tmp_path / "missing", tmp_path):
        with pytest.raises(ConfigError, match="not a generator folder"):
            api.generate_with(folder, "a red cube")


def test_a_prompt_the_text_encoder_cannot_read_is_refused_before_a_folder_is_made(two_prompt_generator, tmp_path):
    with pytest.raises(ConfigError, match="zorb"):
        api.generate_with(two_prompt_generator, "a red zorb", run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_layout_or_particles_are_refused(tmp_path, exact_run):
    prompts = prompts_file(tmp_path, "a red cube")
    with pytest.raises(ConfigError, match="scene.particles"):
        api.amortize(prompts, "amortize", [*exact_run, "scene.particles=2"], tmp_path / "out")


def test_gan_mode_trains_a_discriminator_on_guide_samples_drawn_once(tmp_path, monkeypatch, exact_run):
    prompts = prompts_file(tmp_path, "a red cube", "a blue sphere")
    overrides = [*exact_run, "train.steps=6", "train.ckpt_every=3", "amortize.gan.views=3", "amortize.gan.sample_steps=2"]
    calls = iter(range(100))
    cut = api.amortize(prompts, "amortize-gan", overrides, tmp_path / "gan", should_stop=lambda: next(calls) >= 3)
    saved = torch.load(cut.run_dir / "guide-samples.pt", weights_only=True)
    assert saved["images"].shape == (2, 3, 3, 16, 16) and saved["views"].shape == (2, 3, 3)
    monkeypatch.setattr(adversarial, "sample_images", lambda *args, **kwargs: pytest.fail("a resume draws the samples again"))
    resumed = api.amortize(overrides=[], run_dir=cut.run_dir, resume=True)
    records = [json.loads(line) for line in (resumed.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert resumed.steps == 6 and [r["step"] for r in records] == list(range(1, 7))
    assert all(r["loss/discriminator"] > 0 and "objective/d_real" in r for r in records)


def test_gan_mode_refuses_a_colour_gate(tmp_path, exact_run):
    with pytest.raises(ConfigError, match="colour_t_max"):
        api.amortize(prompts_file(tmp_path, "a red cube"), "amortize-gan", [*exact_run, "objective.colour_t_max=0.5"], tmp_path / "out")


def test_the_bundled_generator_makes_an_asset_offline(tmp_path):
    """"a yellow cube" is one of the colour-shape pairs its training prompts leave out."""
    result = CliRunner().invoke(app, ["generate", "a yellow cube", "--out", str(tmp_path / "run"), "export.resolution=48"])
    assert result.exit_code == 0, result.output
    assert len(trimesh.load(tmp_path / "run" / "mesh.glb", force="mesh").faces) > 100
    red, green, blue = mean_colour(*api.load_run(tmp_path / "run"))
    assert red > blue + 0.3 and green > blue + 0.3, (red, green, blue)
