"""The ``cuda`` hash-grid backend: cuda/hashgrid.cu, built on first use and cached.

The extension is compiled by ``torch.utils.cpp_extension.load`` the first time a grid on a CUDA
device asks for it (about a minute), into torch's extension cache (``TORCH_EXTENSIONS_DIR``, by
default ~/.cache/torch_extensions); later runs load the cached build. Nothing here touches CUDA at
import time.

The kernel differentiates the table only: there is no gradient with respect to the points.
``HashGridEncoding`` routes calls whose points require grad (analytic normals) to torch_per_corner.
"""

import functools
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from sds3d.errors import ConfigError
from sds3d.scene.hashgrid_layout import GridLayout, refuse_point_gradient

CUDA_SOURCES = (Path(__file__).parents[1] / "cuda").resolve()  # the package's link to the top-level cuda/


@functools.lru_cache(maxsize=None)
def _build():
    """(extension, None) once built or loaded from the cache, or (None, why it failed)."""
    sources = [CUDA_SOURCES / "hashgrid_binding.cpp", CUDA_SOURCES / "hashgrid.cu"]
    missing = [str(p) for p in sources if not p.is_file()]
    if missing:
        return None, f"kernel sources not found: {', '.join(missing)}"
    try:
        from torch.utils.cpp_extension import load

        ext = load(name="sds3d_hashgrid", sources=[str(p) for p in sources], extra_cuda_cflags=["-O3"])
    except Exception as exc:  # a compiler error, a missing toolkit or ninja: all mean "use torch"
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        return None, f"building the extension failed: {detail}"
    return ext, None


def cuda_unavailable_reason(device: torch.device) -> Optional[str]:
    """None when the kernel can run on ``device``, else why not (building it on first call)."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return f"the kernel needs a CUDA device, got {device.type}"
    return _build()[1]


class _HashGridKernel(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, table: Tensor, grid: GridLayout, active_levels: int) -> Tensor:
        refuse_point_gradient(ctx, "cuda kernel")
        ext = _build()[0]
        layout = _kernel_layout(grid)
        stream = torch.cuda.current_stream(x.device).cuda_stream
        with torch.cuda.device(x.device):
            out = ext.forward(x.contiguous(), table.contiguous(), *layout, active_levels, stream)
        ctx.save_for_backward(x)
        ctx.layout, ctx.active_levels, ctx.table_rows = layout, active_levels, table.shape[0]
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        (x,) = ctx.saved_tensors
        ext = _build()[0]
        stream = torch.cuda.current_stream(x.device).cuda_stream
        with torch.cuda.device(x.device):
            grad_table = ext.backward(
                x.contiguous(), grad_out.contiguous(), ctx.table_rows, *ctx.layout, ctx.active_levels, stream
            )
        return None, grad_table, None, None


def _kernel_layout(grid: GridLayout) -> tuple:
    """scales (float32, rounded as the torch path rounds them), resolutions, sizes, offsets, dense (uint8)."""
    return (grid.scales.float(), grid.resolutions, grid.sizes, grid.offsets, grid.dense.to(torch.uint8))


def encode_cuda(x: Tensor, table: Tensor, grid: GridLayout, active_levels: int) -> Tensor:
    """[N, 3] float32 points on a CUDA device -> [N, L, F]; the table gradient only (see module docstring)."""
    if x.dtype != torch.float32:
        raise ConfigError(f"the cuda hash grid kernel computes in float32, got {x.dtype}", hint="use backend=torch")
    return _HashGridKernel.apply(x, table, grid, active_levels)
