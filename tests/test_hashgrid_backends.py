"""The fused torch path against the per-corner baseline, and how a backend is chosen."""

import logging

import pytest
import torch

from sds3d.config import load_config
from sds3d.errors import ConfigError
from sds3d.scene import hashgrid, hashgrid_cuda, hashgrid_torch
from sds3d.scene.hashgrid import HashGridEncoding, resolve_backend
from sds3d.scene.hashgrid_torch import encode_fused, encode_per_corner

# 6 levels from 4 to 64 with T = 2**10: levels 0-2 dense, 3-5 hashed
GRID = dict(n_levels=6, features_per_level=2, log2_table_size=10, base_resolution=4, max_resolution=64)


def grid(dtype: torch.dtype) -> HashGridEncoding:
    torch.manual_seed(0)
    enc = HashGridEncoding(**GRID).to(dtype)
    with torch.no_grad():
        enc.table.uniform_(-1, 1)
    return enc


def hard_points(enc: HashGridEncoding, dtype: torch.dtype) -> torch.Tensor:
    """Random points, points exactly on a level's cell faces, the cube's faces, and points far outside."""
    torch.manual_seed(2)
    random = torch.rand(256, 3, dtype=dtype)
    faces = [(k - 0.5) / enc.scales[level] for level in range(enc.n_levels) for k in range(1, 4)]  # pos == k on each level
    on_faces = torch.tensor(faces, dtype=dtype)[torch.randint(len(faces), (128, 3))]
    cube = torch.tensor([0.0, 0.5, 1.0], dtype=dtype)[torch.randint(3, (27, 3))]
    outside = torch.rand(128, 3, dtype=dtype) * 40 - 20
    return torch.cat([random, on_faces, cube, outside])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("active", [6, 4])
def test_fused_matches_per_corner_forward_and_table_backward(dtype, active):
    enc = grid(dtype)
    x = hard_points(enc, dtype)
    grad_out = torch.randn(len(x), enc.n_levels, 2, dtype=dtype, generator=torch.Generator().manual_seed(3))
    results = []
    for encode in (encode_fused, encode_per_corner):
        table = enc.table.detach().clone().requires_grad_()
        out = encode(x, table, enc.layout(), active)
        out.backward(grad_out)
        results.append((out.detach(), table.grad))
    (out_f, table_f), (out_r, table_r) = results
    tol = dict(rtol=1e-6, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out_f, out_r, **tol)  # embedding_bag may fuse a multiply-add
    torch.testing.assert_close(table_f, table_r, **tol)
    if active < enc.n_levels:
        assert torch.all(out_f[:, active:] == 0) and torch.all(table_f[enc.offsets[active] :] == 0)


def test_fused_works_in_chunks(monkeypatch):
    enc = grid(torch.float64)
    x = hard_points(enc, torch.float64)
    whole = encode_fused(x, enc.table.detach(), enc.layout(), enc.n_levels)
    monkeypatch.setattr(hashgrid_torch, "CORNERS_PER_CHUNK", 8 * enc.n_levels * 100)  # 100 points a chunk
    assert torch.equal(encode_fused(x, enc.table.detach(), enc.layout(), enc.n_levels), whole)


def test_fused_refuses_point_gradients():
    enc = grid(torch.float32)
    with pytest.raises(ConfigError, match="no gradient with respect to the points"):
        encode_fused(torch.rand(4, 3, requires_grad=True), enc.table, enc.layout(), enc.n_levels)


def test_module_runs_the_fused_path_by_default_and_per_corner_for_point_gradients(caplog):
    enc = grid(torch.float64)
    x = hard_points(enc, torch.float64)
    fused = encode_fused(x, enc.table.detach(), enc.layout(), enc.n_levels).reshape(len(x), -1)
    assert torch.equal(enc(x).detach(), fused) and enc._resolved == {"cpu": "torch"}
    points = x.clone().requires_grad_()
    with caplog.at_level(logging.INFO, logger="sds3d"):
        enc(points).sum().backward()
    assert points.grad is not None and "those calls run torch_per_corner" in caplog.text


def test_unavailable_backends_fall_back_to_torch_with_one_warning(caplog):
    for name, why in (("cuda", "needs a CUDA device"), ("tcnn", "needs a CUDA device")):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="sds3d"):
            assert resolve_backend(name, torch.device("cpu")) == "torch"
        assert [r.levelname for r in caplog.records] == ["WARNING"]
        assert f"{name} backend unavailable" in caplog.text and why in caplog.text


def test_auto_on_cuda_falls_back_to_torch_when_the_build_fails(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(hashgrid_cuda, "_build", lambda: (None, "building the extension failed: nvcc: error"))
    with caplog.at_level(logging.INFO, logger="sds3d"):
        assert resolve_backend("auto", torch.device("cuda")) == "torch"
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "cuda backend unavailable (building the extension failed: nvcc: error)" in caplog.text


def test_auto_on_cuda_picks_the_kernel_when_it_builds(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(hashgrid_cuda, "_build", lambda: (object(), None))
    with caplog.at_level(logging.INFO, logger="sds3d"):
        assert resolve_backend("auto", torch.device("cuda")) == "cuda"
    assert len(caplog.records) == 1 and "cuda backend (auto on a CUDA device)" in caplog.text


def test_points_that_require_grad_run_torch_on_a_table_only_backend(monkeypatch, caplog):
    def table_only(x, table, grid, active_levels):
        assert not x.requires_grad
        return encode_fused(x, table, grid, active_levels)

    monkeypatch.setitem(hashgrid.ENCODE_BACKENDS, "cuda", table_only)
    monkeypatch.setitem(hashgrid.UNAVAILABLE, "cuda", lambda device: None)
    enc = HashGridEncoding(**GRID, backend="cuda")
    x = torch.rand(16, 3, requires_grad=True)
    with caplog.at_level(logging.INFO, logger="sds3d"):
        enc(x).sum().backward()
        enc(x.detach())
    assert x.grad is not None and "those calls run torch_per_corner" in caplog.text


@pytest.mark.parametrize("backend", ["auto", "cuda", "torch", "tcnn"])
def test_config_accepts_every_backend(backend):
    assert load_config(overrides=[f"scene.encoding.backend={backend}"], prompt="a cube").scene.encoding.backend == backend
