"""Benchmark rows into the README's marked block: the table, each method's mean, the stacked picture."""

import json

import imageio.v3 as iio
import numpy as np
import pytest
from typer.testing import CliRunner

from sds3d.bench.readme import END, PICTURE, START, load_bench_folders, markdown_table
from sds3d.cli import app
from sds3d.errors import ConfigError


def row(method, prompt, iou, mesh_iou, colour, objects=1):
    return {"method": method, "objective": method, "set": "single", "prompt": prompt, "iou": iou, "mesh_iou": mesh_iou,
            "colour_error": colour, "objects": [{"iou": iou, "colour_error": colour}] * objects, "steps": 400,
            "s_per_step": 0.2, "wall_s": 100.0}


def bench_folder(path, rows, height):
    path.mkdir()
    (path / "quality.json").write_text(json.dumps(rows))
    iio.imwrite(path / "quality.png", np.full((height, 8, 3), 7, dtype=np.uint8))
    return path


def test_the_table_ends_with_each_methods_mean_and_worst_colour():
    table = markdown_table([row("base", "a red cube", 0.8, 0.9, 0.05), row("base", "a blue torus", 0.9, 0.7, 0.09),
                            row("csd", "a red cube", 0.5, 0.5, 0.2, objects=2)])
    lines = table.splitlines()
    assert lines[2].startswith("| base (base) | single | a red cube | 0.80 | 0.90 | 0.050 |")
    assert "0.50 / 0.200, 0.50 / 0.200" in lines[4]  # a pair's objects
    assert lines[5].startswith("| **base: mean of 2** | | | **0.85** | **0.80** | max 0.090 |")
    assert lines[6].startswith("| **csd: mean of 1** |")


def test_report_replaces_only_the_block_and_sets_the_pictures_side_by_side(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n{START}\nold table\n{END}\nafter\n")
    first = bench_folder(tmp_path / "a", [row("base", "a red cube", 0.8, 0.9, 0.05)], height=4)
    second = bench_folder(tmp_path / "b", [row("sjc", "a red cube", 0.7, 0.6, 0.06)], height=6)
    result = CliRunner().invoke(app, ["bench", "report", str(first), str(second), "--readme", str(readme)])
    assert result.exit_code == 0, result.output
    text = readme.read_text()
    assert text.startswith("# title\n\nbefore\n" + START) and text.endswith(END + "\nafter\n")
    assert "old table" not in text and "| **sjc: mean of 1** |" in text and f"]({PICTURE.as_posix()})" in text
    assert iio.imread(tmp_path / PICTURE).shape == (6, 16, 3)  # one column per folder, the shorter padded


def test_a_readme_without_the_block_or_a_folder_without_results_is_a_clear_error(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# no block here\n")
    result = CliRunner().invoke(app, ["bench", "quality", "-p", "a red cube", "--readme", str(readme), "--out", str(tmp_path / "out")])
    assert result.exit_code != 0 and "bench-quality:start" in str(result.exception)
    assert not (tmp_path / "out").exists()  # refused before any run
    readme.write_text(f"{START}\n{END}\n")
    with pytest.raises(ConfigError, match="quality.json"):
        load_bench_folders([tmp_path])
