"""The GPU step-path options, on CPU where they run there: a tiny VAE, torch.compile of the UNet, SDPA
attention and latent renders for a warm-up phase (Latent-NeRF)."""


import pytest
import torch

from sds3d.config import load_config
from sds3d.errors import ConfigError
from sds3d.guides import load_guide
from sds3d.train import build_session, train_step

CPU = torch.device("cpu")


@pytest.fixture
def tiny_cfg(tiny_config):
    """``tiny_cfg(model, *overrides)``: tiny.yaml's config for "a red cube" on ``model``, one camera per step."""
    return lambda model, *overrides: load_config(tiny_config, [f"guide.model={model}", "cameras.batch_size=1", *overrides], "a red cube")


@pytest.fixture(scope="module")
def tiny_taesd_dir(tmp_path_factory):
    """A tiny AutoencoderTiny (2x down, 4 latent channels: matches the tiny SD's VAE) in diffusers layout."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    vae = AutoencoderTiny(encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
                          num_encoder_blocks=(1, 1), num_decoder_blocks=(1, 1))
    path = tmp_path_factory.mktemp("tiny_taesd") / "model"
    vae.save_pretrained(path)
    return path


def test_tiny_vae_replaces_the_vae_and_stays_differentiable(tiny_sd_dir, tiny_taesd_dir, tiny_cfg):
    from diffusers import AutoencoderTiny

    guide = load_guide(tiny_cfg(tiny_sd_dir, f"guide.tiny_vae={tiny_taesd_dir}").guide, CPU)
    assert isinstance(guide.vae, AutoencoderTiny) and guide.resolution == 16
    rgb = torch.rand(1, 3, 16, 16, requires_grad=True)
    x = guide.encode(rgb)
    x.sum().backward()
    assert x.shape == (1, 4, 8, 8) and rgb.grad.abs().sum() > 0
    assert guide.decode(x).shape == (1, 3, 16, 16)


def test_tiny_vae_on_a_pixel_model_is_a_config_error(tiny_prior_dir, tiny_taesd_dir, tiny_cfg):
    with pytest.raises(ConfigError, match="pixel-space model without a VAE"):
        load_guide(tiny_cfg(tiny_prior_dir, f"guide.tiny_vae={tiny_taesd_dir}").guide, CPU)


def test_compile_compiles_the_unet_and_attention_is_sdpa(tiny_sd_dir, monkeypatch, tiny_cfg):
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention_processor import AttnProcessor2_0

    compiled = []
    monkeypatch.setattr(UNet2DConditionModel, "compile", lambda self, *a, **k: compiled.append(self), raising=False)
    guide = load_guide(tiny_cfg(tiny_sd_dir, "guide.compile=true").guide, CPU)
    assert compiled == [guide.unet]
    assert all(isinstance(p, AttnProcessor2_0) for p in guide.unet.attn_processors.values())
    load_guide(tiny_cfg(tiny_sd_dir).guide, CPU)
    assert len(compiled) == 1  # off by default


def test_latent_warmup_skips_the_vae_then_hands_over(tiny_sd_dir, monkeypatch, tiny_cfg):
    session = build_session(tiny_cfg(tiny_sd_dir, "render.latent_warmup_steps=2", "render.width=8", "render.height=8"))
    encoded = []
    encode = session.guide.encode
    monkeypatch.setattr(session.guide, "encode", lambda rgb: encoded.append(rgb.shape) or encode(rgb))
    head = session.scene["latent_head"].linear.weight
    before = head.detach().clone()
    for step in range(2):
        assert torch.isfinite(train_step(session, step).loss)
    assert encoded == [] and not torch.equal(before, head.detach())  # the head learns during the warm-up
    train_step(session, 2)
    assert encoded == [(1, 3, 8, 8)]


def test_latent_warmup_needs_a_latent_guide(tiny_prior_dir, tiny_cfg):
    with pytest.raises(ConfigError, match="latent_warmup_steps renders latents"):
        build_session(tiny_cfg(tiny_prior_dir, "render.latent_warmup_steps=5"))
    with pytest.raises(ConfigError, match="latent_warmup_steps must be 0 or more"):
        tiny_cfg(tiny_prior_dir, "render.latent_warmup_steps=-1")


def test_occupancy_grid_on_cpu_renders_with_the_dense_sampler_and_says_so(tiny_sd_dir, caplog, tiny_cfg):
    session = build_session(tiny_cfg(tiny_sd_dir, "render.occupancy_grid=true", "render.width=8", "render.height=8"))
    with caplog.at_level("INFO", logger="sds3d"):
        assert torch.isfinite(train_step(session, 0).loss)
    assert "renderer: dense torch sampler (it needs cuda)" in caplog.text


def blob_render(occupancy_grid: bool):
    from sds3d.cameras import orbit_cameras
    from sds3d.render.volume import VolumeRenderer
    from sds3d.train import build_scene

    cfg = load_config(None, ["device=cuda"], "a red cube")
    torch.manual_seed(0)
    scene = build_scene(cfg).cuda()
    renderer = VolumeRenderer(cfg.render, cfg.scene.radius, occupancy_grid)
    camera = orbit_cameras(cfg.cameras, 1, 32)[0].to("cuda")
    with torch.enable_grad():  # training renders update the grid (all cells in its warm-up)
        renderer.render(scene["field"], scene["background"], camera)
    with torch.no_grad():
        return renderer.render(scene["field"], scene["background"], camera)


@pytest.mark.cuda
def test_occupancy_grid_on_cuda_matches_the_dense_sampler_or_names_the_missing_extra():
    try:
        import nerfacc  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="needs nerfacc"):
            blob_render(True)
        return
    fast, dense = blob_render(True), blob_render(False)
    assert (fast.opacity - dense.opacity).abs().mean() < 0.02 and (fast.rgb - dense.rgb).abs().mean() < 0.02
