"""Hash-grid encoding backends timed against each other on the same points (used by `sds3d bench speed`)."""

import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch

from sds3d.scene.hashgrid import ENCODE_BACKENDS, UNAVAILABLE, HashGridEncoding

REFERENCE = "torch_per_corner"
DEFAULT_BACKENDS = (REFERENCE, "torch", "cuda", "tcnn")


def _median_ms(fn: Callable[[], None], repeats: int, sync: Callable[[], None]) -> float:
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _skip_reason(name: str, device: torch.device) -> Optional[str]:
    if name not in ENCODE_BACKENDS:
        return f"unknown backend; choices: {', '.join(ENCODE_BACKENDS)}"
    return UNAVAILABLE[name](device) if name in UNAVAILABLE else None


def bench_encodings(
    n_points: int = 2**18,
    levels: int = 16,
    backends: Sequence[str] | None = None,
    device: str = "auto",
    repeats: int = 10,
) -> list[dict]:
    """Time forward and forward+backward (table gradient) of each backend on the same random points.

    The grid is the tcnn default apart from ``levels``: 2 features per level, T = 2**19, resolutions
    16 to 2048. Each backend runs once untimed (the cuda backend builds or loads its extension
    there), then ``repeats`` times; the median is reported.

    Args:
        n_points: points encoded per call.
        levels: levels of the grid.
        backends: names from ``sds3d.scene.hashgrid.ENCODE_BACKENDS``; all of them by default.
        device: "auto" (cuda when available, else cpu), or a torch device string.
        repeats: timed calls per measurement.

    Returns:
        One dict per backend: backend, device, points, levels, forward_ms, forward_backward_ms,
        speedup_vs_reference (the per-corner torch baseline's forward+backward time over this one's,
        when the baseline ran), and skipped (None, or why the backend could not run here; then the
        timings are None).
    """
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    enc = HashGridEncoding(n_levels=levels).to(dev)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(n_points, 3, generator=generator).to(dev)
    grad_out = torch.randn(n_points, levels, enc.table.shape[1], generator=generator).to(dev)
    table, layout = enc.table, enc.layout()

    rows: List[Dict] = []
    for name in backends or DEFAULT_BACKENDS:
        row = dict(backend=name, device=str(dev), points=n_points, levels=levels, forward_ms=None,
                   forward_backward_ms=None, speedup_vs_reference=None, skipped=_skip_reason(name, dev))
        rows.append(row)
        if row["skipped"]:
            continue
        encode = ENCODE_BACKENDS[name]

        def forward(encode=encode):
            return encode(x, table, layout, levels)

        def forward_backward(encode=encode):
            table.grad = None
            encode(x, table, layout, levels).backward(grad_out)

        forward_backward()
        with torch.no_grad():
            row["forward_ms"] = _median_ms(forward, repeats, sync)
        row["forward_backward_ms"] = _median_ms(forward_backward, repeats, sync)

    reference = next((r for r in rows if r["backend"] == REFERENCE and not r["skipped"]), None)
    for row in rows:
        if reference and not row["skipped"]:
            row["speedup_vs_reference"] = reference["forward_backward_ms"] / row["forward_backward_ms"]
    return rows
