"""Multiresolution hash encoding (instant-ngp), following tiny-cuda-nn's conventions, with its backends.

Conventions, for L levels of F features each, table size T = 2**log2_table_size, base resolution
N_min and max resolution N_max:

- growth per level b = exp((ln N_max - ln N_min) / (L - 1)), and b = 1 when L == 1.
- level l: scale_l = N_min * b**l - 1 and resolution_l = ceil(scale_l) + 1. A point x in [0, 1]^3
  maps to pos = x * scale_l + 0.5, corner = floor(pos), frac = pos - corner, and the level's
  features are the trilinear interpolation of the 8 corners around pos. The half-cell offset is
  tcnn's: it staggers the levels so their cell faces do not line up (instant-ngp, appendix A).
- level l holds min(T, next multiple of 8 of resolution_l**3) rows. A corner's row is dense
  row-major, x + y*res + z*res**2, when resolution_l**3 fits in the level, and otherwise the
  coherent prime hash (x * 1) XOR (y * 2654435761) XOR (z * 805459861). Either way it is taken
  modulo the level's row count. The hash is computed in int64. For hashed levels (row count
  T, a power of two) this gives the same rows as tcnn's uint32 arithmetic.
- all levels share one flat table of shape [sum of rows, F], initialised uniform in +-1e-4.
  ``offsets[l]`` is the first row of level l.
- points outside [0, 1] are not clamped and raise no error. Their corners wrap through the
  modulo, as they do in tcnn, so the encoding is defined everywhere but repeats out there.
  Negative corners on dense levels wrap by the mathematical modulo, not tcnn's uint32 wrap.

The output is level-major: column l*F + f is feature f of level l. Levels at or above
``active_levels`` are zero (and not computed), so shapes never change and locked levels get no gradient.

Backends (``scene.encoding.backend``), all on the same table, so checkpoints move freely between them:
"torch" (fused pure torch, hashgrid_torch.py), "cuda" (cuda/hashgrid.cu, built on first use;
hashgrid_cuda.py), "tcnn" (tiny-cuda-nn; hashgrid_tcnn.py lists how it differs), and "auto": cuda on
a CUDA device, torch elsewhere. These differentiate the table only; "torch_per_corner", the
straightforward torch version, is differentiable twice in the points too, so calls whose points
require grad (analytic normals) run on it. It is also the baseline of sds3d/bench/encoding.py.
"""

import logging
import math
from typing import Callable, Dict, Optional

import torch
from torch import Tensor, nn

from sds3d.errors import ConfigError
from sds3d.scene.hashgrid_cuda import cuda_unavailable_reason, encode_cuda
from sds3d.scene.hashgrid_layout import GridLayout
from sds3d.scene.hashgrid_tcnn import encode_tcnn, tcnn_unavailable_reason
from sds3d.scene.hashgrid_torch import encode_fused, encode_per_corner

log = logging.getLogger("sds3d")

ENCODE_BACKENDS: Dict[str, Callable[[Tensor, Tensor, GridLayout, int], Tensor]] = {
    "torch": encode_fused,
    "torch_per_corner": encode_per_corner,
    "cuda": encode_cuda,
    "tcnn": encode_tcnn,
}
"""Backend name -> ``fn(x [N, 3], table [P, F], grid, active_levels) -> [N, L, F]``, levels from
``active_levels`` on zero and without table gradient (the module docstring says what each is)."""

UNAVAILABLE: Dict[str, Callable[[torch.device], Optional[str]]] = {
    "cuda": cuda_unavailable_reason,
    "tcnn": tcnn_unavailable_reason,
}
"""Backends that may not run everywhere -> ``fn(device) -> None, or why not``."""

POINT_GRADIENT_BACKENDS = ("torch_per_corner",)
"""Backends differentiable in the points (twice, for analytic normals); calls whose points require
grad run "torch_per_corner" whatever the backend."""


def _check_backend_name(name: str) -> None:
    if name != "auto" and name not in ENCODE_BACKENDS:
        choices = ", ".join(["auto", *ENCODE_BACKENDS])
        raise ConfigError(f"unknown hash grid backend {name!r}; valid choices: {choices}", hint="use 'auto'")


def resolve_backend(name: str, device: torch.device) -> str:
    """Pick the encode backend that runs on ``device`` and log one line saying which and why.

    "auto" is "cuda" on a CUDA device and "torch" elsewhere. A backend that cannot run here (no
    GPU, the kernel build failed, tinycudann missing) falls back to "torch" with one warning.

    Args:
        name: "auto" or a key of ``ENCODE_BACKENDS``.
        device: where the points and the table live.

    Returns:
        A key of ``ENCODE_BACKENDS``.
    """
    _check_backend_name(name)
    if name == "auto" and device.type != "cuda":
        log.info("hash grid: torch backend (auto on %s: the compiled kernels need a CUDA device)", device.type)
        return "torch"
    chosen = "cuda" if name == "auto" else name
    problem = UNAVAILABLE[chosen](device) if chosen in UNAVAILABLE else None
    if problem:
        log.warning("hash grid: %s backend unavailable (%s); falling back to the torch backend", chosen, problem)
        return "torch"
    log.info("hash grid: %s backend (%s)", chosen, "auto on a CUDA device" if name == "auto" else "requested")
    return chosen


def active_levels_at(step: int, n_levels: int, start_level: int, start_step: int, update_steps: int) -> int:
    """Levels unlocked at ``step``, threestudio's ProgressiveBandHashGrid rule.

    ``min(start_level + max(step - start_step, 0) // update_steps, n_levels)``: start_level levels up
    to and including ``start_step``, then one more every ``update_steps`` steps. With start_level 8,
    start_step 2000 and update_steps 500: steps 0..2499 -> 8, 2500 -> 9, 6000 and later -> 16.

    Args:
        step: global training step.
        n_levels: levels in the grid.
        start_level: levels active from the start.
        start_step: step after which levels start unlocking.
        update_steps: steps between two unlocks.

    Returns:
        Number of active levels.
    """
    return min(start_level + max(step - start_step, 0) // update_steps, n_levels)


class HashGridEncoding(nn.Module):
    """Multiresolution hash encoding of points in [0, 1]^3 (conventions in the module docstring).

    The default 16 levels of 2 features from 16 to 2048 give b ~= 1.3819 and 32 output dims.

    Args:
        n_levels: L.
        features_per_level: F.
        log2_table_size: log2 of T, the most rows one level may hold.
        base_resolution: N_min.
        max_resolution: N_max.
        backend: "auto" or a key of ``ENCODE_BACKENDS``; resolved per device on first use.
    """

    def __init__(
        self,
        n_levels: int = 16,
        features_per_level: int = 2,
        log2_table_size: int = 19,
        base_resolution: int = 16,
        max_resolution: int = 2048,
        backend: str = "auto",
    ):
        super().__init__()
        _check_backend_name(backend)
        self.backend = backend
        self._resolved: Dict[str, str] = {}
        self._logged_point_gradients = False
        self.n_levels = n_levels
        self.log2_table_size = log2_table_size
        self.base_resolution = base_resolution
        self.n_output_dims = n_levels * features_per_level
        self.active_levels = n_levels
        log_growth = math.log(max_resolution / base_resolution) / (n_levels - 1) if n_levels > 1 else 0.0
        self.per_level_scale = math.exp(log_growth)
        # rounded so that float error in b**l cannot push an exact N_max - 1 past an integer and add a row
        scales = [round(base_resolution * self.per_level_scale**level - 1, 6) for level in range(n_levels)]
        resolutions = [math.ceil(s) + 1 for s in scales]
        sizes = [min(2**log2_table_size, -(-r**3 // 8) * 8) for r in resolutions]
        offsets = [sum(sizes[:level]) for level in range(n_levels)]
        self.register_buffer("scales", torch.tensor(scales, dtype=torch.float64), persistent=False)
        self.register_buffer("resolutions", torch.tensor(resolutions), persistent=False)
        self.register_buffer("sizes", torch.tensor(sizes), persistent=False)
        dense = [r**3 <= s for r, s in zip(resolutions, sizes)]
        self.register_buffer("dense", torch.tensor(dense), persistent=False)
        self.register_buffer("offsets", torch.tensor(offsets), persistent=False)
        self.table = nn.Parameter(torch.empty(sum(sizes), features_per_level).uniform_(-1e-4, 1e-4))


    @classmethod
    def from_config(cls, enc) -> "HashGridEncoding":
        """From a ``scene.encoding`` config section."""
        return cls(n_levels=enc.levels, features_per_level=enc.features_per_level, log2_table_size=enc.log2_table_size,
                   base_resolution=enc.base_resolution, max_resolution=enc.max_resolution, backend=enc.backend)

    def set_active_levels(self, n: int) -> None:
        """Unlock the first ``n`` levels (clamped to [1, n_levels]); the rest output zeros."""
        self.active_levels = max(1, min(n, self.n_levels))

    def layout(self) -> GridLayout:
        return GridLayout(
            self.offsets, self.scales, self.resolutions, self.sizes, self.dense,
            self.log2_table_size, self.base_resolution, self.per_level_scale,
        )

    def forward(self, x: Tensor) -> Tensor:
        """Encode points.

        Args:
            x: [..., 3] points, nominally in [0, 1]. Math runs in float32, or in float64 when x is
                float64 (for gradcheck); the table is cast to that dtype. Points that require grad
                run on torch_per_corner whatever the backend (the others differentiate the table only).

        Returns:
            [..., L*F] features in the math dtype.
        """
        kind = x.device.type
        if kind not in self._resolved:
            self._resolved[kind] = resolve_backend(self.backend, x.device)
        backend = self._resolved[kind]
        if x.requires_grad and torch.is_grad_enabled() and backend not in POINT_GRADIENT_BACKENDS:
            if not self._logged_point_gradients:
                log.info("hash grid: points require grad, which %s lacks; those calls run torch_per_corner", backend)
                self._logged_point_gradients = True
            backend = "torch_per_corner"
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        points = x.reshape(-1, 3).to(dtype)  # [N, 3]
        out = ENCODE_BACKENDS[backend](points, self.table.to(dtype), self.layout(), self.active_levels)  # [N, L, F]
        return out.reshape(*x.shape[:-1], self.n_output_dims)  # [..., L*F]
