"""bench_encodings: the rows `sds3d bench speed` prints (assertions on shape, never on timings)."""

import torch

from sds3d.bench.encoding import bench_encodings


def test_bench_reports_every_backend_and_skips_what_cannot_run():
    rows = bench_encodings(n_points=256, levels=2, backends=["torch_per_corner", "torch", "cuda"], device="cpu", repeats=1)
    by_name = {r["backend"]: r for r in rows}
    assert list(by_name) == ["torch_per_corner", "torch", "cuda"]
    for name in ("torch_per_corner", "torch"):
        row = by_name[name]
        assert row["skipped"] is None and row["device"] == "cpu" and (row["points"], row["levels"]) == (256, 2)
        assert row["forward_ms"] > 0 and row["forward_backward_ms"] > 0 and row["speedup_vs_reference"] > 0
    assert by_name["torch_per_corner"]["speedup_vs_reference"] == 1.0
    if not torch.cuda.is_available():
        assert by_name["cuda"]["skipped"] and by_name["cuda"]["forward_ms"] is None
