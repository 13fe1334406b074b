import logging
import math

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from sds3d.errors import ConfigError
from sds3d.scene.hashgrid import HashGridEncoding, active_levels_at, resolve_backend

# scales 1, 3, 7 and resolutions 2, 4, 8: levels 0 and 1 are dense (8 and 64 rows), level 2 is hashed (64)
SMALL = dict(n_levels=3, features_per_level=2, log2_table_size=6, base_resolution=2, max_resolution=8)


def small_grid(dtype=torch.float64) -> HashGridEncoding:
    torch.manual_seed(0)
    enc = HashGridEncoding(**SMALL).to(dtype)
    with torch.no_grad():
        enc.table.uniform_(-1, 1)  # large enough that gradcheck sees every term
    return enc


def interior_points(enc: HashGridEncoding, n: int) -> torch.Tensor:
    """Random points at least 1e-3 (in cell units) away from every level's cell faces."""
    torch.manual_seed(1)
    x = torch.rand(4 * n, 3, dtype=torch.float64)
    frac = (x[:, None, :] * enc.scales[None, :, None] + 0.5) % 1  # [4n, L, 3]
    keep = ((frac > 1e-3) & (frac < 1 - 1e-3)).flatten(1).all(1)
    return x[keep][:n]


def point_at_corner(enc: HashGridEncoding, level: int, corner: tuple[int, int, int]) -> torch.Tensor:
    """A [1, 3] point whose pos on ``level`` sits just past ``corner``, so that corner has weight ~1."""
    c = torch.tensor(corner, dtype=torch.float64)
    return ((c - 0.5 + 1e-9) / enc.scales[level])[None]


def level_out(enc: HashGridEncoding, x: torch.Tensor, level: int) -> torch.Tensor:
    f = enc.table.shape[1]
    return enc(x)[:, level * f : (level + 1) * f]


def test_gradcheck_table():
    enc = small_grid()
    x = interior_points(enc, 8)
    fn = lambda table: torch.func.functional_call(enc, {"table": table}, (x,))  # noqa: E731
    assert gradcheck(fn, (enc.table.detach().clone().requires_grad_(),))


def test_gradcheck_and_gradgradcheck_points():
    enc = small_grid()
    x = interior_points(enc, 8).requires_grad_()
    assert gradcheck(enc, (x,))
    assert gradgradcheck(enc, (x,))


def test_resolutions_follow_the_formulas():
    enc = HashGridEncoding(n_levels=16, base_resolution=16, max_resolution=4096)
    b = math.exp((math.log(4096) - math.log(16)) / 15)
    assert enc.per_level_scale == pytest.approx(1.4473, abs=1e-4)
    expected = torch.tensor([16 * b**level - 1 for level in range(16)], dtype=torch.float64)
    torch.testing.assert_close(enc.scales, expected, rtol=0, atol=1e-5)
    assert torch.equal(enc.resolutions, torch.ceil(enc.scales).long() + 1)
    assert enc.resolutions[0] == 16 and enc.resolutions[-1] == 4096
    assert enc.n_output_dims == 32


def test_dense_and_hashed_levels_follow_the_rule():
    enc = small_grid()
    assert enc.dense.tolist() == [True, True, False]
    assert enc.sizes.tolist() == [8, 64, 64]
    assert enc.offsets.tolist() == [0, 8, 72]


@pytest.mark.parametrize(
    "level, corner, row",
    [
        (1, (1, 2, 3), 1 + 2 * 4 + 3 * 16),  # dense: x + y*res + z*res^2
        (2, (3, 5, 6), (3 ^ (5 * 2654435761) ^ (6 * 805459861)) % 64),  # hashed: 3 ^ 13272178805 ^ 4832759166
    ],
)
def test_corner_reads_its_row(level, corner, row):
    enc = small_grid()
    with torch.no_grad():
        enc.table.zero_()
        enc.table[enc.offsets[level] + row] = torch.tensor([1.0, 2.0], dtype=torch.float64)
    out = level_out(enc, point_at_corner(enc, level, corner), level)
    torch.testing.assert_close(out, torch.tensor([[1.0, 2.0]], dtype=torch.float64))


def test_trilinear_reproduces_linear_functions_on_dense_levels():
    enc = small_grid()
    a = torch.tensor([[0.3, -1.2], [2.0, 0.5], [-0.7, 1.1]], dtype=torch.float64)  # [3, F]
    bias = torch.tensor([0.25, -0.5], dtype=torch.float64)
    with torch.no_grad():
        for level in (0, 1):
            r = int(enc.resolutions[level])
            z, y, x = torch.meshgrid(*[torch.arange(r, dtype=torch.float64)] * 3, indexing="ij")
            coords = torch.stack([x, y, z], -1).reshape(-1, 3)  # rows x + y*r + z*r^2
            enc.table[enc.offsets[level] : enc.offsets[level] + r**3] = coords @ a + bias
    # pos < 1 on level 0 keeps every corner inside the grid (no wrap)
    pts = torch.rand(32, 3, dtype=torch.float64) * 0.45
    for level in (0, 1):
        pos = pts * enc.scales[level] + 0.5
        torch.testing.assert_close(level_out(enc, pts, level), pos @ a + bias)


def test_locked_levels_output_zero_and_get_no_gradient():
    enc = small_grid()
    enc.set_active_levels(1)
    out = enc(interior_points(enc, 8))
    assert torch.all(out[:, 2:] == 0) and torch.any(out[:, :2] != 0)
    out.sum().backward()
    assert torch.all(enc.table.grad[enc.offsets[1] :] == 0)
    assert torch.any(enc.table.grad[: enc.offsets[1]] != 0)


def test_set_active_levels_clamps():
    enc = small_grid()
    enc.set_active_levels(0)
    assert enc.active_levels == 1
    enc.set_active_levels(99)
    assert enc.active_levels == 3


@pytest.mark.parametrize("step, expected", [(0, 8), (2000, 8), (2499, 8), (2500, 9), (3000, 10), (10**6, 16)])
def test_active_levels_at_follows_threestudio(step, expected):
    assert active_levels_at(step, n_levels=16, start_level=8, start_step=2000, update_steps=500) == expected


def test_points_outside_the_unit_cube_wrap_without_error():
    enc = small_grid(torch.float32)
    out = enc(torch.tensor([[-3.0, 0.5, 7.25], [1.5, -0.01, 2.0]]))
    assert out.shape == (2, 6) and out.dtype == torch.float32 and torch.isfinite(out).all()


def test_keeps_leading_dims():
    enc = small_grid(torch.float32)
    assert enc(torch.rand(2, 5, 3)).shape == (2, 5, 6)


def test_unknown_backend_names_the_choices():
    with pytest.raises(ConfigError, match="torch"):
        HashGridEncoding(**SMALL, backend="warp")


def test_auto_resolves_to_torch_with_one_log_line(caplog):
    with caplog.at_level(logging.INFO, logger="sds3d"):
        assert resolve_backend("auto", torch.device("cpu")) == "torch"
    assert len(caplog.records) == 1 and "torch backend" in caplog.text
