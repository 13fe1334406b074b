"""`sds3d bench quality` end to end on the exact world denoiser: rows, JSON, picture, bad method names."""

import json

from typer.testing import CliRunner

from sds3d.bench import quality
from sds3d.cli import app


def test_a_method_gets_a_scored_row_json_and_picture(tmp_path, monkeypatch):
    monkeypatch.setattr(quality, "RESOLUTION", 16)  # scoring renders 36 turns x 4 views of ground truth
    overrides = ["guide.model=exact:world@16", "train.steps=3", "train.val_every=0", "export.resolution=32",
                 "render.width=8", "render.height=8", "train.val_resolution=16"]
    rows = quality.run_quality(["sjc"], overrides, tmp_path, prompts=["a red cube"])

    assert [(r["method"], r["objective"], r["prompt"]) for r in rows] == [("sjc", "sjc", "a red cube")]
    assert 0.0 <= rows[0]["iou"] <= 1.0 and rows[0]["colour_error"] >= 0.0 and 0.0 <= rows[0]["mesh_iou"] <= 1.0
    assert rows[0]["steps"] == 3 and rows[0]["s_per_step"] > 0
    assert json.loads((tmp_path / "quality.json").read_text()) == [{k: v for k, v in rows[0].items()}]
    assert (tmp_path / "quality.png").is_file()
    assert "sjc (sjc)" in quality.format_table(rows)


def test_unknown_method_fails_before_any_run(tmp_path):
    result = CliRunner().invoke(app, ["bench", "quality", "-m", "no-such-method", "--out", str(tmp_path / "b")])
    assert result.exit_code != 0
    assert "no-such-method" in str(result.exception) + result.output
    assert not (tmp_path / "b").exists()
