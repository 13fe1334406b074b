"""The bundled prior: architecture, word-level tokenizer, rendered dataset, and a few resumable
training steps exported in a folder PixelGuide loads."""

from __future__ import annotations

import json

import pytest
import torch

from sds3d.cameras import camera_features, sample_cameras, view_labels
from sds3d.config import load_config
from sds3d.errors import ConfigError
from sds3d.guides.pixel import PixelGuide
from sds3d.prior.data import render_dataset
from sds3d.prior.model import build_prior, build_tokenizer
from sds3d.prior.train import learning_rate, train_prior
from sds3d.world.render import render_scenes
from sds3d.world.scenes import parse_caption, vocabulary

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def cameras_cfg():
    return load_config(prompt="world").cameras


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_build_prior_parameter_counts_match_the_docstring():
    prior = build_prior()
    assert 1.6e6 < count(prior.unet) < 1.8e6  # "about 1.7M UNet"
    assert 0.06e6 < count(prior.text_encoder) < 0.08e6  # "+ 0.07M text-encoder"
    assert prior.unet.config.sample_size == 32 and prior.unet.config.in_channels == 3
    assert prior.scheduler.config.prediction_type == "epsilon"


def test_tokenizer_one_token_per_world_word_and_unk_otherwise():
    tokenizer = build_tokenizer()
    ids = set()
    for word in vocabulary():
        tokens = tokenizer(word, add_special_tokens=False).input_ids
        assert tokens == [tokenizer.convert_tokens_to_ids(word)] and tokens != [tokenizer.unk_token_id], word
        ids.add(tokens[0])
    assert len(ids) == len(vocabulary())
    assert tokenizer("hamburger", add_special_tokens=False).input_ids == [tokenizer.unk_token_id]
    assert tokenizer.convert_ids_to_tokens(tokenizer.unk_token_id) == "[UNK]"
    caption = "a red cube to the left of a blue sphere, front view"
    assert len(tokenizer(caption, add_special_tokens=False).input_ids) == len(caption.replace(",", " ,").split())


def test_render_dataset_is_deterministic_by_seed(cameras_cfg):
    images, captions, *_ = render_dataset(6, 8, cameras_cfg, seed=1)
    again, captions_again, *_ = render_dataset(6, 8, cameras_cfg, seed=1)
    other, other_captions, *_ = render_dataset(6, 8, cameras_cfg, seed=2)
    assert images.shape == (6, 3, 8, 8) and images.dtype == torch.uint8
    assert torch.equal(images, again) and captions == captions_again
    assert not torch.equal(images, other) and captions != other_captions


def test_render_dataset_captions_and_cameras_describe_the_rendered_scenes(cameras_cfg):
    seed, n, resolution = 5, 8, 16
    images, captions, features, object_ids = render_dataset(n, resolution, cameras_cfg, seed=seed, view_suffix_prob=1.0, pair_prob=0.5)
    scenes = [parse_caption(c) for c in captions]
    with torch.random.fork_rng():  # the cameras render_dataset drew: torch's RNG seeded with ``seed``
        torch.manual_seed(seed)
        cameras = sample_cameras(cameras_cfg, resolution, resolution, batch_size=n)
    truth = render_scenes(scenes, cameras)
    assert torch.equal(images, (truth.rgb.clamp(0, 1) * 255).round().byte().permute(0, 3, 1, 2))
    assert object_ids.dtype == torch.int8 and torch.equal(object_ids.long(), truth.object_ids)
    assert any(s.relation for s in scenes) and (object_ids == 1).any()
    labels = view_labels(cameras.elevation, cameras.azimuth)
    assert [c.split(", ")[1] for c in captions] == [f"{v} view" for v in labels]
    torch.testing.assert_close(features, camera_features(cameras))


def test_render_dataset_view_suffix_rate(cameras_cfg):
    _, captions, *_ = render_dataset(200, 4, cameras_cfg, seed=0, view_suffix_prob=0.8)
    suffixed = sum(c.endswith(" view") for c in captions)
    assert 0.68 * 200 < suffixed < 0.92 * 200
    for caption in captions:
        parse_caption(caption)
    _, plain, *_ = render_dataset(20, 4, cameras_cfg, seed=0, view_suffix_prob=0.0)
    assert not any("," in c for c in plain)


def test_render_dataset_pair_prob_sets_the_share_of_pairs(cameras_cfg):
    def pairs(prob):
        _, captions, *_ = render_dataset(60, 4, cameras_cfg, seed=0, pair_prob=prob)
        return sum(parse_caption(c).relation is not None for c in captions)

    assert pairs(0.0) == 0 and pairs(1.0) == 60
    assert 0.45 * 60 < pairs(0.7) < 0.9 * 60


def test_evaluation_pairs_are_distinct_training_pairs_and_keep_the_first_five():
    from sds3d.prior.sample import evaluation_captions
    from sds3d.world.scenes import HELD_OUT

    captions = evaluation_captions()
    assert [len(captions[name]) for name in ("singles", "held-out", "pairs")] == [25, 5, 25]
    assert captions["pairs"][:5] == ["a red cube to the left of a red cylinder", "a green cube on top of a yellow sphere",
                                     "a blue sphere to the left of an orange cone", "a yellow cylinder on top of a green torus",
                                     "a purple torus to the left of a purple cone"]
    assert len(set(captions["pairs"])) == 25 and evaluation_captions() == captions
    scenes = [parse_caption(c) for c in captions["pairs"]]
    assert {s.relation for s in scenes} == {"to the left of", "on top of"}
    assert all((o.color, o.shape) not in HELD_OUT for s in scenes for o in s.objects)
    assert evaluation_captions(pair_count=8)["pairs"] == captions["pairs"][:8]


def test_train_prior_exports_a_loadable_model_and_resumes(tmp_path):
    out_dir, work_dir = tmp_path / "prior", tmp_path / "work"
    kwargs = dict(batch_size=4, dataset_size=16, resolution=16, channels=(8, 16), save_every=100, log_every=1)
    assert train_prior(out_dir, work_dir, steps=3, **kwargs) == out_dir
    assert torch.load(work_dir / "ckpt.pt", weights_only=False)["step"] == 3
    guide = PixelGuide.from_pretrained(str(out_dir), CPU, "fp32", cache_dir=str(tmp_path / "cache"))
    assert guide.resolution == 16 and guide.view_aware
    emb = guide.embed(["a red cube, front view"])
    x_t, t = torch.randn(1, 3, 16, 16), torch.tensor([500])
    eps = guide.predict_noise(x_t, t, emb[:, None])
    assert eps.shape == (1, 1, 3, 16, 16) and torch.isfinite(eps).all()
    cameras = sample_cameras(load_config(prompt="world").cameras, 16, 16, batch_size=1)
    # Three steps have moved the camera embedding off zero: the view now changes the prediction.
    assert not torch.allclose(guide.predict_noise(x_t, t, emb[:, None], cameras=cameras), eps)
    torch.testing.assert_close(guide.predict_noise(x_t, t, emb[:, None], cameras=None), eps)

    train_prior(out_dir, work_dir, steps=5, **kwargs)
    assert torch.load(work_dir / "ckpt.pt", weights_only=False)["step"] == 5
    steps = [json.loads(line)["step"] for line in (work_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]  # continued from step 3, not restarted
    assert len(list(work_dir.glob("dataset-*.pt"))) == 1  # renders cached and reused


def test_cosine_learning_rate_decays_from_the_base_to_zero_and_unknown_schedules_are_refused(tmp_path):
    assert [learning_rate(4e-4, "cosine", step, 100) for step in (0, 50, 100)] == pytest.approx([4e-4, 2e-4, 0.0])
    assert learning_rate(4e-4, "constant", 70, 100) == 4e-4
    with pytest.raises(ConfigError, match="'linear'.*constant, cosine"):
        train_prior(tmp_path / "prior", tmp_path / "work", steps=2, lr_schedule="linear")
    assert not (tmp_path / "work").exists()  # refused before anything is rendered or written


def test_degradations_change_the_image_and_caption_it_with_known_words():
    import random

    from sds3d.prior.degrade import DEGRADATIONS, GENERAL, degrade

    tokenizer = build_tokenizer()
    image = render_dataset(1, 32, load_config(prompt="world").cameras, seed=3)[0][0]
    rng = random.Random(0)
    seen = set()
    for _ in range(60):
        out, caption = degrade(image, "a red cube, front view", rng)
        assert out.shape == image.shape and out.dtype == torch.uint8 and not torch.equal(out, image)
        phrases = [p.strip() for p in caption.removeprefix("a red cube, front view").split(",") if p.strip()]
        known = {p for _, names in DEGRADATIONS.values() for p in names} | set(GENERAL)
        assert phrases and set(phrases) <= known, caption
        assert tokenizer.unk_token_id not in tokenizer(caption).input_ids
        seen |= set(phrases)
    assert len(seen) >= 8  # the phrases vary


@pytest.mark.parametrize("method", ["nfsd", "csd"])
def test_the_methods_negative_prompts_are_words_the_prior_knows(method):
    """CSD's and NFSD's negative prompts must keep all their words on the prior, within its token budget."""
    from sds3d.prior.model import MAX_TOKENS

    tokenizer = build_tokenizer()
    negative = load_config(method, prompt="a red cube").prompt.negative
    ids = tokenizer(negative).input_ids
    assert tokenizer.unk_token_id not in ids and len(ids) <= MAX_TOKENS


def test_warm_start_keeps_the_old_prior_and_extends_its_vocabulary(tmp_path):
    from sds3d.prior.model import Prior
    from sds3d.prior.train import warm_start

    old = build_prior(resolution=16, channels=(8, 16))
    small = build_tokenizer(vocabulary())
    old.text_encoder.resize_token_embeddings(len(small))
    Prior(old.unet, old.text_encoder, small, old.scheduler).save(tmp_path / "old")
    new = build_prior(resolution=16, channels=(8, 16))
    warm_start(new, tmp_path / "old")
    torch.testing.assert_close(new.unet.state_dict(), {k: v.half().float() for k, v in old.unet.state_dict().items()})
    old_rows = old.text_encoder.get_input_embeddings().weight
    new_rows = new.text_encoder.get_input_embeddings().weight
    assert new_rows.shape[0] > old_rows.shape[0]
    torch.testing.assert_close(new_rows[: old_rows.shape[0]], old_rows)
    for word in vocabulary():  # the old words keep their ids
        assert small.convert_tokens_to_ids(word) == new.tokenizer.convert_tokens_to_ids(word)


def test_warm_start_from_a_camera_blind_prior_predicts_as_it_did_from_any_camera(tmp_path, cameras_cfg):
    from diffusers import UNet2DConditionModel

    from sds3d.prior.train import warm_start

    old = build_prior(resolution=16, channels=(8, 16))
    blind_config = {**old.unet.config, "class_embed_type": None, "projection_class_embeddings_input_dim": None}
    blind = UNet2DConditionModel.from_config(blind_config)
    blind.load_state_dict(old.unet.state_dict(), strict=False)
    old.unet = blind
    old.save(tmp_path / "blind")
    new = build_prior(resolution=16, channels=(8, 16))
    warm_start(new, tmp_path / "blind")
    x_t, t, text = torch.randn(3, 3, 16, 16), torch.tensor([50, 500, 950]), torch.randn(3, 5, 64)
    cameras = camera_features(sample_cameras(cameras_cfg, 16, 16, batch_size=3))
    with torch.no_grad():
        expected = blind.half().float()(x_t, t, encoder_hidden_states=text).sample
        torch.testing.assert_close(new.unet(x_t, t, encoder_hidden_states=text, class_labels=cameras).sample, expected)


def test_prior_sample_writes_the_grid_and_each_captions_scores(tiny_prior_dir, tmp_path):
    from typer.testing import CliRunner

    from sds3d.cli import app
    from sds3d.prior.sample import evaluation_captions

    out = tmp_path / "samples.png"
    result = CliRunner().invoke(app, ["prior", "sample", "--model", str(tiny_prior_dir), "--steps", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.with_suffix(".json").read_text())
    captions = evaluation_captions()
    for name, expected in captions.items():
        rows = [r for r in report["samples"] if r["set"] == name]
        assert [r["caption"] for r in rows] == expected
        assert report["scores"][name] == pytest.approx(sum(r["passed"] for r in rows) / len(rows))
        assert f"{name:<24} {report['scores'][name]:.3f}" in result.output
        assert report["scores"][f"{name}/own_iou"] == pytest.approx(sum(r["own_iou"] for r in rows) / len(rows))
    assert out.is_file()


def test_a_t5_prior_trains_from_a_clip_one_and_the_guide_reads_its_text_as_training_did(tmp_path):
    from sds3d.prior.train import encode, warm_start

    kwargs = dict(batch_size=4, dataset_size=16, resolution=16, channels=(8, 16), save_every=100, log_every=1)
    train_prior(tmp_path / "clip", tmp_path / "clip-work", steps=1, **kwargs)
    started = build_prior(resolution=16, channels=(8, 16), text_encoder="t5")
    fresh = {k: v.clone() for k, v in started.text_encoder.state_dict().items()}
    warm_start(started, tmp_path / "clip")  # the UNet is copied, the encoder of another kind keeps its init
    clip_unet = PixelGuide.from_pretrained(str(tmp_path / "clip"), CPU, "fp32", cache_dir=str(tmp_path / "cache")).unet
    torch.testing.assert_close(started.unet.state_dict(), clip_unet.state_dict())
    torch.testing.assert_close(started.text_encoder.state_dict(), fresh)

    out_dir, work_dir = tmp_path / "t5", tmp_path / "t5-work"
    train_prior(out_dir, work_dir, steps=2, init=tmp_path / "clip", text_encoder="t5", **kwargs)
    guide = PixelGuide.from_pretrained(str(out_dir), CPU, "fp32", cache_dir=str(tmp_path / "cache"))
    saved = build_prior(resolution=16, channels=(8, 16), text_encoder="t5")
    saved.text_encoder = type(saved.text_encoder).from_pretrained(out_dir / "text_encoder")
    captions = ["a green cube on top of a yellow sphere", "a green cube on top of a yellow cone", ""]
    with torch.no_grad():
        trained = encode(saved, captions)
    torch.testing.assert_close(guide.embed(captions), trained)
    # Bidirectional: the word "yellow" (token 8) reads the shape after it, which a causal encoder cannot.
    assert not torch.allclose(trained[0, 8], trained[1, 8])
    # The relative-position bias starts as ALiBi's: head h, d words away (T5's exact buckets 0-3 each side): -d / 4^(h+1).
    bias = build_prior(text_encoder="t5").text_encoder.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight
    expected = -torch.tensor([0.0, 1.0, 2.0, 3.0])[:, None] / 4.0 ** torch.arange(1, 5)[None]
    torch.testing.assert_close(bias[:4].detach(), expected)
    torch.testing.assert_close(bias[8:12].detach(), expected)
    with pytest.raises(ConfigError, match="has a t5 text encoder, not clip"):
        train_prior(out_dir, work_dir, steps=3, **kwargs)
    with pytest.raises(ConfigError, match="unknown text encoder 'bert'"):
        train_prior(out_dir, tmp_path / "other", steps=3, text_encoder="bert", **kwargs)
