"""The pure-torch hash-grid backends: the fused default and the per-corner version.

"torch" (:func:`encode_fused`) is the fast path, on CPU and as the GPU fallback. It differentiates the
table only, like the compiled kernels. "torch_per_corner" (:func:`encode_per_corner`) is the
straightforward version: differentiable twice in the points and the table (analytic normals run on
it whatever the backend), and the baseline the benchmark measures the others against. The two agree
to float rounding (embedding_bag may fuse a multiply-add); the tests pin it.
"""

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from sds3d.scene.hashgrid_layout import GridLayout, refuse_point_gradient

CORNERS_PER_CHUNK = 2**20
"""Corner rows built at once (8 MB of int64). On CPU, big temporaries are fresh pages from the OS on
every op (the allocator hands large blocks back on free) and miss the cache, so working in chunks this
size measured several times faster than one pass over all points."""


def _pad_levels(out: Tensor, n_levels: int) -> Tensor:
    """[N, A, F] features of the active levels -> [N, L, F], locked levels zero."""
    if out.shape[1] == n_levels:
        return out
    return torch.cat([out, out.new_zeros(out.shape[0], n_levels - out.shape[1], out.shape[2])], dim=1)


def _corners(x: Tensor, grid: GridLayout, a: int) -> tuple:
    """Table rows and trilinear weights of the 8 corners of points ``x`` [c, 3] on the first ``a`` levels.

    Built level-major with the points innermost ([A, ..., c]), so each op runs long contiguous loops;
    hashed levels take their modulo with a mask (T is a power of two, and the mask distributes over
    XOR), only the dense levels pay for a division.

    Returns:
        index [A*c, 8] int64 rows and weights [A*c, 8]; row l*c + n holds point n on level l, and
        column dx*4 + dy*2 + dz the corner (dx, dy, dz).
    """
    c, d = x.shape[0], int(grid.dense[:a].sum())  # dense levels come first
    sizes = grid.sizes[:a, None, None, None]  # [A, 1, 1, 1]
    pos = grid.scales[:a, None, None].to(x.dtype) * x.t() + 0.5  # [A, 3, c]
    corner = pos.floor()
    frac = pos - corner  # [A, 3, c]
    mult = grid.multipliers()[:a, :, None]  # [A, 3, 1]
    terms = torch.empty(a, 3, 2, c, dtype=torch.long, device=x.device)  # per axis, lower and upper corner
    torch.mul(corner.long(), mult, out=terms[:, :, 0])
    torch.add(terms[:, :, 0], mult, out=terms[:, :, 1])
    terms[d:] &= sizes[d:] - 1
    tx, ty, tz = terms[:, 0, :, None, None], terms[:, 1, None, :, None], terms[:, 2, None, None, :]
    index = torch.empty(a, 2, 2, 2, c, dtype=torch.long, device=x.device)  # [A, dx, dy, dz, c]
    torch.add(tx[:d] + ty[:d], tz[:d], out=index[:d])
    index[:d] = index[:d].remainder(sizes[:d, ..., None])
    torch.bitwise_xor(tx[d:] ^ ty[d:], tz[d:], out=index[d:])
    index += grid.offsets[:a, None, None, None, None]
    w = torch.stack([1 - frac, frac], dim=2)  # [A, 3, 2, c]
    weights = torch.empty(a, 2, 2, 2, c, dtype=x.dtype, device=x.device)  # [A, dx, dy, dz, c]
    torch.mul(w[:, 0, :, None, None] * w[:, 1, None, :, None], w[:, 2, None, None, :], out=weights)
    # embedding_bag wants each point's 8 corners contiguous: [A, 8, c] -> [A*c, 8]
    index = index.view(a, 8, c).transpose(1, 2).contiguous().view(a * c, 8)
    return index, weights.view(a, 8, c).transpose(1, 2).contiguous().view(a * c, 8)


class _FusedEncoding(torch.autograd.Function):
    """Chunked over points; each chunk is one gather-multiply-sum (embedding_bag) over all its corners
    and levels. The backward rebuilds the rows instead of keeping them (8x the output's memory)."""

    @staticmethod
    def forward(ctx, x: Tensor, table: Tensor, grid: GridLayout, a: int) -> Tensor:
        refuse_point_gradient(ctx, "fused torch")
        n, n_feats, chunk = x.shape[0], table.shape[1], max(1, CORNERS_PER_CHUNK // (8 * a))
        out = x.new_empty(n, a, n_feats)
        for s in range(0, n, chunk):
            index, weights = _corners(x[s : s + chunk], grid, a)
            feats = F.embedding_bag(index, table, per_sample_weights=weights, mode="sum")  # [A*c, F]
            out[s : s + chunk] = feats.view(a, -1, n_feats).transpose(0, 1)  # [c, A, F]
        ctx.save_for_backward(x)
        ctx.grid, ctx.a, ctx.table_shape, ctx.chunk = grid, a, table.shape, chunk
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        (x,) = ctx.saved_tensors
        rows, n_feats = ctx.table_shape
        grad = grad_out.new_zeros(n_feats, rows)  # feature-major: a 1-D index_add is far faster than a row one
        for s in range(0, x.shape[0], ctx.chunk):
            index, weights = _corners(x[s : s + ctx.chunk], ctx.grid, ctx.a)
            g = grad_out[s : s + ctx.chunk].transpose(0, 1).reshape(-1, 1, n_feats)  # [A*c, 1, F]
            for f in range(n_feats):
                grad[f].index_add_(0, index.view(-1), (weights * g[:, :, f]).view(-1))
        return None, grad.t(), None, None


def encode_fused(x: Tensor, table: Tensor, grid: GridLayout, active_levels: int) -> Tensor:
    """Interpolated features, all corners and levels of a chunk of points in one gather.

    Differentiates the table only (see the module docstring).

    Args:
        x: [N, 3] points, in the dtype of ``table``.
        table: [P, F] flat feature table.
        grid: the level layout.
        active_levels: levels computed; the rest are zero.

    Returns:
        [N, L, F] features.
    """
    return _pad_levels(_FusedEncoding.apply(x, table, grid, active_levels), grid.n_levels)


def encode_per_corner(x: Tensor, table: Tensor, grid: GridLayout, active_levels: int) -> Tensor:
    """The straightforward version: for each of the 8 corners, hash every level and gather its rows.

    Plain autograd, so differentiable twice in the points and the table. Arguments and result as
    :func:`encode_fused`.
    """
    a = active_levels
    pos = x[:, None, :] * grid.scales[None, :a, None].to(x.dtype) + 0.5  # [N, A, 3]
    corner = pos.detach().floor()
    frac = pos - corner  # [N, A, 3]
    corner = corner.long()
    mult, dense = grid.multipliers()[:a], grid.dense[:a]  # [A, 3], [A]
    out = torch.zeros(x.shape[0], a, table.shape[1], dtype=x.dtype, device=x.device)
    for d in itertools.product((0, 1), repeat=3):  # (dx, dy, dz), z fastest
        t = (corner + torch.tensor(d, device=x.device)) * mult  # [N, A, 3]
        row = torch.where(dense, t[..., 0] + t[..., 1] + t[..., 2], t[..., 0] ^ t[..., 1] ^ t[..., 2])
        row = row.remainder(grid.sizes[:a]) + grid.offsets[:a]  # [N, A]
        wx, wy, wz = (frac[..., i] if d[i] else 1 - frac[..., i] for i in range(3))
        out = out + ((wx * wy) * wz)[..., None] * table[row]  # [N, A, F]
    return _pad_levels(out, grid.n_levels)
