"""`sds3d bench speed` and `--random-weights`: the real train step timed part by part on tiny models,
and guides built from architecture configs alone (the shipped SD 2.1-base one, and a shrunken copy).
Nothing here asserts a timing; only that every part was measured and reported."""

import json
import shutil
import sys

import pytest
import torch
from omegaconf import OmegaConf

from sds3d.bench.speed import PARTS, bench_speed, format_report
from sds3d.cli import main
from sds3d.config import ASSETS_DIR
from sds3d.errors import ModelLoadError
from sds3d.guides.random_weights import architecture_folder, random_weights_guide

SMALL = ["render.width=8", "render.height=8", "render.samples=8", "render.importance_samples=4", "device=cpu",
         "scene.encoding.levels=2", "scene.encoding.log2_table_size=8", "scene.encoding.max_resolution=16",
         "scene.encoding.start_level=1"]
SD21 = ASSETS_DIR / "sd21-base"


def shrunken_sd21(folder):
    """assets/sd21-base with small channels (same block types, heads, text width 1024 and 8x VAE)."""
    shutil.copytree(SD21, folder)
    for name, changes in {"unet": {"block_out_channels": [40, 80, 160, 160], "layers_per_block": 1, "norm_num_groups": 8, "sample_size": 8},
                          "vae": {"block_out_channels": [8, 16, 16, 16], "layers_per_block": 1, "norm_num_groups": 4}}.items():
        path = folder / name / "config.json"
        path.write_text(json.dumps(json.loads(path.read_text()) | changes))
    return folder


def test_every_part_and_the_floor_are_measured_on_the_tiny_prior(tiny_prior_dir):
    result = bench_speed(None, [*SMALL, f"guide.model={tiny_prior_dir}"], steps=2, warmup=1)
    assert set(PARTS) | {"hash-grid encoding", "guide calls"} <= set(result["parts_s"])
    assert all(v > 0 for v in result["parts_s"].values())
    assert result["parts_s"]["guide calls"] <= result["parts_s"]["objective"]
    assert result["guide_calls_per_step"] == 1 and result["floor_s"] > 0 and result["steps_per_s"] > 0
    assert result["peak_memory_mb"] > 0 and result["torch_threads"] >= 1
    report = format_report(result)
    assert "guide-bound floor" in report and "steps/s" in report and "of which guide calls" in report


def test_cli_prints_the_breakdown_and_encoding_table_and_writes_json(tiny_prior_dir, tmp_path, monkeypatch, capsys):
    rows = [{"backend": "torch", "device": "cpu", "points": 64, "levels": 2, "forward_ms": 1.0, "forward_backward_ms": 3.0,
             "speedup_vs_reference": 4.0}, {"backend": "cuda", "skipped": "needs an NVIDIA GPU"}]
    monkeypatch.setattr("sds3d.bench.speed.encoding_rows", lambda *args, **kwargs: rows)
    out = tmp_path / "speed.json"
    monkeypatch.setattr(sys, "argv", ["sds3d", "bench", "speed", "--steps", "1", "--warmup", "0", "--out", str(out),
                                      *SMALL, f"guide.model={tiny_prior_dir}"])
    with pytest.raises(SystemExit) as info:
        main()
    printed = capsys.readouterr().out
    assert info.value.code == 0
    assert "render" in printed and "backward" in printed and "4.0x" in printed and "skipped: needs an NVIDIA GPU" in printed
    saved = json.loads(out.read_text())
    assert saved["encodings"] == rows and saved["steps"] == 1


def test_shipped_sd21_base_architecture_loads_into_the_diffusers_configs():
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig

    unet_config = UNet2DConditionModel.load_config(SD21, subfolder="unet")
    init, unused = UNet2DConditionModel.extract_init_dict(unet_config)[:2]
    assert not unused
    assert init["block_out_channels"] == [320, 640, 1280, 1280] and init["attention_head_dim"] == [5, 10, 20, 20]
    assert init["cross_attention_dim"] == 1024 and init["use_linear_projection"] and init["sample_size"] == 64
    vae_init, vae_unused = AutoencoderKL.extract_init_dict(AutoencoderKL.load_config(SD21, subfolder="vae"))[:2]
    assert not vae_unused and vae_init["block_out_channels"] == [128, 256, 512, 512] and vae_init["latent_channels"] == 4
    text = CLIPTextConfig.from_pretrained(SD21 / "text_encoder")
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.max_position_embeddings) == (1024, 23, 16, 77)
    scheduler = DDIMScheduler.from_config(DDIMScheduler.load_config(SD21, subfolder="scheduler"))
    assert scheduler.config.prediction_type == "epsilon" and scheduler.alphas_cumprod.shape == (1000,)


def test_hub_id_maps_to_the_shipped_architecture_and_an_unknown_one_is_named():
    assert architecture_folder("stabilityai/stable-diffusion-2-1-base") == SD21
    with pytest.raises(ModelLoadError, match="no architecture config for 'someone/other-model'"):
        architecture_folder("someone/other-model")


def test_random_weights_guide_from_a_shrunken_sd21_has_real_shapes(tmp_path):
    cfg = OmegaConf.create({"model": str(shrunken_sd21(tmp_path / "sd21")), "dtype": "fp32", "channels_last": True,
                            "compile": False, "tiny_vae": ""})
    guide = random_weights_guide(cfg, torch.device("cpu"))
    assert guide.latent and guide.resolution == 64
    embeddings = guide.embed(["a red cube", ""])
    assert embeddings.shape == (2, 77, 1024) and torch.equal(embeddings[0], guide.embed(["a red cube"])[0])
    x = guide.encode(torch.rand(1, 3, 8, 8))
    assert x.shape == (1, 4, 8, 8)
    eps = guide.predict_noise(x, torch.tensor([500]), embeddings[:, None])
    assert eps.shape == (2, 1, 4, 8, 8) and torch.isfinite(eps).all()


def test_bench_runs_on_random_weights_with_a_negative_prompt(tmp_path):
    folder = shrunken_sd21(tmp_path / "sd21")
    result = bench_speed(None, [*SMALL, f"guide.model={folder}", "prompt.negative=blurry"], steps=1, warmup=0, random_weights=True)
    assert result["random_weights"] and result["parts_s"]["encode"] > 0 and result["floor_s"] > 0


def test_picard_bench_runs_both_and_scores_them(small_run, tmp_path, monkeypatch, capsys):
    out = tmp_path / "picard.json"
    monkeypatch.setattr(sys, "argv", ["sds3d", "bench", "speed", "--picard", "2", "--prompt", "a red cube", "--out", str(out),
                                      "--runs", str(tmp_path / "runs"), *small_run, "guide.model=exact:world", "train.steps=4",
                                      "train.picard.threshold=0", "train.picard.adapt=0"])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 0 and "speed-up" in capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert set(saved["runs"]) == {"sequential", "picard-2"} and all(run["steps"] == 4 for run in saved["runs"].values())
    # threshold 0: the same run, so the same asset
    assert saved["runs"]["picard-2"]["glb_iou"] == pytest.approx(saved["runs"]["sequential"]["glb_iou"], abs=1e-6)
    assert saved["same_quality"]
