"""Shared pytest fixtures for sds3d.

* ``tiny_sd_dir`` / ``tiny_sd_vpred_dir``: session-scoped paths to tiny, randomly
  initialised Stable Diffusion folders (epsilon / v_prediction), built offline
  by :func:`tiny_models.save_tiny_stable_diffusion`.
* ``tiny_if_dir``: a tiny DeepFloyd-IF-stage-I-shaped folder (T5 encoder, pixel UNet with
  learned variance, no vae/), built by :func:`tiny_models.save_tiny_deepfloyd_if`.
* ``tiny_prior_dir``: an untrained bundled-prior folder at 16 px (``sds3d.prior.model.build_prior``).
* ``tiny_config``: tests/configs/tiny.yaml, a few-second CPU run on the tiny models.
* ``tiny_prior_config``: tiny.yaml on the tiny prior, writing a GLB only, as a config file in ``tmp_path``.
* ``small_run``: overrides that shrink any shipped config to a seconds-long CPU run.
* ``_isolated_env`` (autouse, session): forces the Hugging Face hub offline and
  points ``SDS3D_CACHE`` at a temporary directory.
* Tests marked ``cuda`` are skipped when no NVIDIA GPU is available.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Tuple

# huggingface_hub reads HF_HUB_OFFLINE when it is first imported, so set it
# before anything below (torch is fine; diffusers/transformers import the hub).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from tiny_models import save_tiny_deepfloyd_if, save_tiny_stable_diffusion  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _isolated_env(tmp_path_factory: pytest.TempPathFactory):
    """Offline hub + a private SDS3D_CACHE for the whole session.

    torch's thread count is left at its default.
    """
    cache_dir = tmp_path_factory.mktemp("sds3d_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        mp.setenv("SDS3D_CACHE", str(cache_dir))
        yield cache_dir


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny epsilon-prediction Stable Diffusion folder (diffusers layout)."""
    return save_tiny_stable_diffusion(tmp_path_factory.mktemp("tiny_sd") / "model")


@pytest.fixture(scope="session")
def tiny_sd_vpred_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny v-prediction Stable Diffusion folder (diffusers layout)."""
    return save_tiny_stable_diffusion(
        tmp_path_factory.mktemp("tiny_sd_vpred") / "model", prediction_type="v_prediction"
    )


@pytest.fixture(scope="session")
def tiny_if_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny DeepFloyd IF stage I folder (diffusers layout, no vae/)."""
    return save_tiny_deepfloyd_if(tmp_path_factory.mktemp("tiny_if") / "model")


@pytest.fixture(scope="session")
def tiny_prior_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained bundled prior at 16 px with small channels (diffusers layout, no vae/)."""
    from sds3d.prior.model import build_prior

    path = tmp_path_factory.mktemp("tiny_prior") / "model"
    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    try:
        prior = build_prior(resolution=16, channels=(8, 16))
    finally:
        torch.random.set_rng_state(state)
    prior.save(path)
    return path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_cuda = pytest.mark.skip(reason="needs an NVIDIA GPU")
    for item in items:
        if item.get_closest_marker("cuda") is not None:  # not keywords: a parameter id "cuda" is one too
            item.add_marker(skip_cuda)


@pytest.fixture(scope="session")
def tiny_config() -> str:
    """tests/configs/tiny.yaml: a few-second CPU run on the tiny models (the test sets guide.model)."""
    return str(Path(__file__).parent / "configs" / "tiny.yaml")


@pytest.fixture
def tiny_prior_config(tmp_path: Path, tiny_config: str, tiny_prior_dir: Path) -> Path:
    """tiny.yaml on the tiny bundled-prior model, writing a GLB only: a config file the app can offer."""
    node = OmegaConf.load(tiny_config)
    node.guide.model = str(tiny_prior_dir)
    node.export.formats = ["glb"]
    path = tmp_path / "tiny-prior.yaml"
    OmegaConf.save(node, path)
    return path


@pytest.fixture(scope="session")
def small_run() -> Tuple[str, ...]:
    """Overrides that shrink any config to a seconds-long CPU run at 16 px (each test adds its train.steps)."""
    return (
        "device=cpu", "guide.dtype=fp32", "train.log_every=1", "train.val_every=0", "train.val_resolution=16",
        "render.width=16", "render.height=16", "render.samples=8", "render.importance_samples=4",
        "scene.encoding.levels=4", "scene.encoding.log2_table_size=10", "scene.encoding.max_resolution=32",
        "scene.encoding.start_level=4", "scene.mlp_width=16", "export.resolution=16", "export.video_frames=0",
    )
