"""Visual prompts (prompt.image through an IP-Adapter, TV-3DG): a tiny adapter and CLIP image encoder built here load
through diffusers' load_ip_adapter as a hub id would; the image reaches the prompt's rows of a guide call and never
CFG's unconditional ones; runs with it write a GLB; guides that cannot take an image and bad files are clear errors."""

import json
from dataclasses import replace

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from objective_fakes import make_conditions
from tiny_models import IP_ADAPTER_WEIGHT, save_tiny_ip_adapter

from sds3d import api
from sds3d.config import load_config
from sds3d.errors import ConfigError, ModelLoadError
from sds3d.guides import load_guide
from sds3d.objectives.base import predict


@pytest.fixture(scope="module")
def adapter_dir(tiny_sd_dir, tmp_path_factory):
    return save_tiny_ip_adapter(tmp_path_factory.mktemp("ip_adapter") / "adapter", tiny_sd_dir / "unet")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    path = tmp_path_factory.mktemp("reference") / "reference.png"
    iio.imwrite(path, (np.random.default_rng(0).random((40, 48, 3)) * 255).astype(np.uint8))
    return path


def image_overrides(adapter_dir, reference, *more):
    return [f"guide.ip_adapter={adapter_dir}", f"guide.ip_adapter_weight={IP_ADAPTER_WEIGHT}", f"prompt.image={reference}", *more]


def load(tiny_sd_dir, adapter_dir, reference, *more):
    cfg = load_config(prompt="a cat", overrides=[f"guide.model={tiny_sd_dir}", "guide.dtype=fp32",
                                                  *image_overrides(adapter_dir, reference, *more)])
    return load_guide(cfg.guide, torch.device("cpu")), cfg


def test_the_image_reaches_the_unet_at_the_adapters_scale(tiny_sd_dir, adapter_dir, reference):
    guide, cfg = load(tiny_sd_dir, adapter_dir, reference)
    image = guide.image_adapter.embed(cfg.prompt.image)
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([500, 300])
    embeddings = guide.embed(["a cat", ""])[:, None].expand(2, 2, -1, -1)
    without = guide.predict_noise(x, t, embeddings)
    seen = guide.predict_noise(x, t, embeddings, images=image.expand(2, 2, -1))
    assert (seen - without).abs().max() > 0.1
    assert torch.equal(guide.predict_noise(x, t, embeddings, images=torch.zeros(2, 2, image.shape[0])), without)

    muted, _ = load(tiny_sd_dir, adapter_dir, reference, "guide.ip_adapter_scale=0")
    assert torch.allclose(muted.predict_noise(x, t, embeddings, images=image.expand(2, 2, -1)), without, atol=1e-6)


def test_the_image_is_seen_on_the_prompts_side_of_cfg_only(tiny_sd_dir, adapter_dir, reference):
    guide, cfg = load(tiny_sd_dir, adapter_dir, reference)
    text = guide.embed(["a cat", "blurry", ""])
    conditions = replace(make_conditions(), cond=text[0:1].expand(2, -1, -1), negative=text[1:2].expand(2, -1, -1),
                         empty=text[2:3].expand(2, -1, -1), no_view=text[0:1].expand(2, -1, -1))
    with_image = replace(conditions, image=guide.image_adapter.embed(cfg.prompt.image).expand(2, -1))
    x, t, names = torch.randn(2, 4, 8, 8), torch.tensor([500, 300]), ("cond", "negative", "empty")
    plain, seen = predict(guide, x, t, conditions, names), predict(guide, x, t, with_image, names)
    assert (seen["cond"] - plain["cond"]).abs().max() > 0.1
    assert torch.equal(seen["negative"], plain["negative"]) and torch.equal(seen["empty"], plain["empty"])


@pytest.mark.parametrize("config", ["csm", "prolificdreamer"])
def test_a_run_with_an_image_prompt_writes_a_glb(small_run, config, tiny_sd_dir, adapter_dir, reference, tmp_path):
    overrides = [f"guide.model={tiny_sd_dir}", *small_run, "train.steps=2", *image_overrides(adapter_dir, reference)]
    result = api.generate("a cat", config, overrides, run_dir=tmp_path / "run")
    assert (result.run_dir / "mesh.glb").is_file()
    assert all(np.isfinite(json.loads(line)["loss"]) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines())


def test_a_finished_run_exports_after_its_image_moved_and_resuming_names_it(small_run, tiny_sd_dir, adapter_dir, reference, tmp_path):
    moved = tmp_path / "reference.png"
    moved.write_bytes(reference.read_bytes())
    overrides = [f"guide.model={tiny_sd_dir}", *small_run, "train.steps=2", *image_overrides(adapter_dir, moved)]
    run_dir = api.generate("a cat", "csm", overrides, run_dir=tmp_path / "run").run_dir
    moved.unlink()
    (glb,) = api.export(run_dir, ["glb"])
    assert glb.stat().st_size > 0
    with pytest.raises(ConfigError, match="cannot read prompt.image"):
        api.resume(run_dir, ["train.steps=4"])


@pytest.mark.parametrize("model, message", [(None, "cannot take an image prompt"), ("exact:world", "cannot take an image prompt")])
def test_guides_without_an_image_input_refuse_it_before_loading(model, message, adapter_dir, reference, tiny_if_dir):
    overrides = image_overrides(adapter_dir, reference) + ([f"guide.model={model}"] if model else [])
    with pytest.raises(ConfigError, match=message):
        load_config(prompt="a red cube", overrides=overrides)
    with pytest.raises(ConfigError, match="cannot take an image prompt"):  # DeepFloyd IF: pixel space, no VAE
        load_config(prompt="a cat", overrides=[f"guide.model={tiny_if_dir}", *image_overrides(adapter_dir, reference)])


def test_bad_image_prompts_are_clear_errors(tiny_sd_dir, adapter_dir, reference, tmp_path):
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("not an image")
    model = f"guide.model={tiny_sd_dir}"
    cases = [
        ([model, *image_overrides(adapter_dir, not_an_image)], "is not an image"),
        ([model, *image_overrides(adapter_dir, tmp_path / "missing.png")], "cannot read prompt.image"),
        ([model, f"prompt.image={reference}"], "needs an IP-Adapter"),
        ([model, f"guide.ip_adapter={adapter_dir}"], "prompt.image is not"),
    ]
    for overrides, message in cases:
        with pytest.raises(ConfigError, match=message):
            load_config(prompt="a cat", overrides=overrides)
    with pytest.raises(ModelLoadError, match="cannot load the IP-Adapter models/ip-adapter_sd15.safetensors"):
        cfg = load_config(prompt="a cat", overrides=[model, f"guide.ip_adapter={adapter_dir}", f"prompt.image={reference}"])
        load_guide(cfg.guide, torch.device("cpu"))
