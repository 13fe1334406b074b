"""The ``tcnn`` hash-grid backend: tiny-cuda-nn's HashGrid encoding, on our own table.

tcnn stores a HashGrid's parameters as one flat fp32 vector, level after level, row after row,
feature after feature: exactly ``table.reshape(-1)`` (same level sizes, offsets, dense/hash rule and
prime hash). So no mapping is needed; the tcnn module is run with our table swapped in for its own
parameters through ``torch.func.functional_call``, and checkpoints stay backend-independent.

Limits, where tcnn differs from the torch path (expect agreement to about 1e-6 relative, not bitwise):
- tcnn computes each level's scale in float32 (``exp2(l * log2 b) * N_min - 1``) and the position
  with one fused multiply-add, so points within float rounding of a cell face may land in the
  neighbouring cell;
- points outside [0, 1] with negative coordinates wrap through uint32 on dense levels (the torch path
  takes the mathematical modulo), so far outside the cube the two disagree;
- like the cuda kernel, it is only used for the table gradient here: calls whose points require grad
  run on torch_per_corner. tinycudann is imported on first use only.
"""

import functools
from typing import Optional

import torch
from torch import Tensor

from sds3d.errors import ConfigError
from sds3d.scene.hashgrid_layout import GridLayout


def _import_tcnn():
    import tinycudann  # CUDA-only: imported on first use, never at module import

    return tinycudann


def tcnn_unavailable_reason(device: torch.device) -> Optional[str]:
    """None when tinycudann can run on ``device``, else why not."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return f"tinycudann needs a CUDA device, got {device.type}"
    try:
        _import_tcnn()
    except ImportError as exc:
        return f"tinycudann is not installed ({exc}); pip install it from github.com/NVlabs/tiny-cuda-nn"
    return None


@functools.lru_cache(maxsize=None)
def _tcnn_encoding(n_levels: int, features: int, log2_table_size: int, base_resolution: int, per_level_scale: float, device: str):
    config = {
        "otype": "HashGrid",
        "n_levels": n_levels,
        "n_features_per_level": features,
        "log2_hashmap_size": log2_table_size,
        "base_resolution": base_resolution,
        "per_level_scale": per_level_scale,
        "interpolation": "Linear",
    }
    return _import_tcnn().Encoding(3, config, dtype=torch.float32).to(device)


def encode_tcnn(x: Tensor, table: Tensor, grid: GridLayout, active_levels: int) -> Tensor:
    """[N, 3] points on a CUDA device -> [N, L, F] through tinycudann (see the module docstring)."""
    n_levels, features = grid.n_levels, table.shape[1]
    enc = _tcnn_encoding(n_levels, features, grid.log2_table_size, grid.base_resolution, grid.per_level_scale, str(x.device))
    if enc.params.numel() != table.numel():
        raise ConfigError(
            f"tinycudann lays out {enc.params.numel()} parameters for this grid, the table holds {table.numel()}: "
            "this tinycudann version sizes its levels differently",
            hint="use scene.encoding.backend=cuda or torch",
        )
    out = torch.func.functional_call(enc, {"params": table.float().reshape(-1)}, (x.float(),))
    out = out.float().view(-1, n_levels, features)  # [N, L, F]
    if active_levels < n_levels:
        out = out * (torch.arange(n_levels, device=x.device) < active_levels)[:, None].to(out.dtype)
    return out.to(x.dtype)
