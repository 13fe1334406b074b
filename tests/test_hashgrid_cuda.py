"""The cuda kernel against the torch path on the same GPU (skipped without one; builds the extension)."""

import pytest
import torch

from sds3d.errors import ConfigError
from sds3d.scene.hashgrid import HashGridEncoding, resolve_backend
from sds3d.scene.hashgrid_cuda import encode_cuda
from sds3d.scene.hashgrid_torch import encode_fused

pytestmark = pytest.mark.cuda


def grid(features: int) -> HashGridEncoding:
    torch.manual_seed(0)
    enc = HashGridEncoding(n_levels=8, features_per_level=features, log2_table_size=12, base_resolution=4, max_resolution=256)
    with torch.no_grad():
        enc.table.uniform_(-1, 1)
    return enc.cuda()


def hard_points(enc: HashGridEncoding) -> torch.Tensor:
    """Random points, points on every level's cell faces, the cube's faces and corners, points far outside."""
    torch.manual_seed(1)
    random = torch.rand(4096, 3)
    faces = [(k - 0.5) / enc.scales[level].item() for level in range(enc.n_levels) for k in range(0, 6)]
    on_faces = torch.tensor(faces, dtype=torch.float32)[torch.randint(len(faces), (1024, 3))]
    cube = torch.tensor([0.0, 0.5, 1.0])[torch.randint(3, (64, 3))]
    outside = torch.rand(1024, 3) * 40 - 20
    return torch.cat([random, on_faces, cube, outside]).cuda()


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("features", [1, 2, 4, 8])
@pytest.mark.parametrize("active", [8, 5])
def test_kernel_matches_torch_forward_and_table_backward(features, active):
    enc = grid(features)
    x = hard_points(enc)
    grad_out = torch.randn(len(x), enc.n_levels, features, device="cuda")
    results = []
    for encode in (encode_cuda, encode_fused):
        table = enc.table.detach().clone().requires_grad_()
        out = encode(x, table, enc.layout(), active)
        out.backward(grad_out)
        results.append((out.detach(), table.grad))
    (out_k, grad_k), (out_t, grad_t) = results
    assert relative_error(out_k, out_t) < 1e-5
    assert (out_k - out_t).abs().max().item() < 1e-5 * out_t.abs().max().item()
    assert relative_error(grad_k, grad_t) < 1e-5
    assert torch.all(out_k[:, active:] == 0) and torch.all(grad_k[enc.offsets[active] if active < enc.n_levels else len(grad_k) :] == 0)


def test_auto_picks_the_kernel_on_a_gpu():
    assert resolve_backend("auto", torch.device("cuda")) == "cuda"


def test_module_on_the_kernel_trains_the_table_and_normals_fall_back():
    enc = grid(2)
    enc.backend = "cuda"
    x = hard_points(enc)
    enc(x).square().sum().backward()
    assert enc._resolved == {"cuda": "cuda"} and enc.table.grad.abs().sum() > 0
    points = x.clone().requires_grad_()
    enc(points).sum().backward()  # runs the torch path: the kernel has no point gradient
    assert points.grad is not None and torch.isfinite(points.grad).all()


def test_kernel_refuses_point_gradients_when_called_directly():
    enc = grid(2)
    with pytest.raises(ConfigError, match="no gradient with respect to the points"):
        encode_cuda(torch.rand(8, 3, device="cuda", requires_grad=True), enc.table, enc.layout(), enc.n_levels)


def test_tcnn_matches_torch_when_installed():
    pytest.importorskip("tinycudann")
    enc = grid(2)
    x = torch.rand(4096, 3, device="cuda")  # away from the far-outside points, where tcnn wraps differently
    tcnn = HashGridEncoding(n_levels=8, features_per_level=2, log2_table_size=12, base_resolution=4, max_resolution=256,
                            backend="tcnn").cuda()
    with torch.no_grad():
        tcnn.table.copy_(enc.table)
    assert relative_error(tcnn(x), enc(x)) < 1e-4
