"""What every hash-grid backend receives besides the points and the table (conventions: hashgrid.py)."""

from typing import NamedTuple

import torch
from torch import Tensor

from sds3d.errors import ConfigError

PRIMES = (1, 2654435761, 805459861)
"""The coherent prime hash of tcnn: row = (x * 1) XOR (y * 2654435761) XOR (z * 805459861)."""


class GridLayout(NamedTuple):
    """Per-level tables of a grid, on the device of its feature table.

    Attributes:
        offsets: [L] int64 first table row of each level.
        scales: [L] float64 scale_l (backends cast it to the math dtype, as the torch path does).
        resolutions: [L] int64 resolution_l.
        sizes: [L] int64 rows in each level.
        dense: [L] bool, True where the level is indexed row-major instead of hashed; always a prefix
            of the levels, since resolution grows with the level.
        log2_table_size: log2 of T, the most rows one level may hold.
        base_resolution: N_min.
        per_level_scale: b.
    """

    offsets: Tensor
    scales: Tensor
    resolutions: Tensor
    sizes: Tensor
    dense: Tensor
    log2_table_size: int
    base_resolution: int
    per_level_scale: float

    @property
    def n_levels(self) -> int:
        return self.offsets.shape[0]

    def multipliers(self) -> Tensor:
        """[L, 3] int64 per-axis factors of a corner's row: (1, res, res^2) on dense levels, else the primes."""
        res = self.resolutions[:, None]
        dense_mult = torch.cat([torch.ones_like(res), res, res * res], dim=1)
        return torch.where(self.dense[:, None], dense_mult, torch.tensor(PRIMES, device=res.device))


def refuse_point_gradient(ctx, backend: str) -> None:
    """Table-only backends raise when autograd wants the gradient with respect to the points."""
    if ctx.needs_input_grad[0]:
        raise ConfigError(f"the {backend} hash grid has no gradient with respect to the points",
                          hint="use the torch_per_corner backend (HashGridEncoding does so by itself)")
