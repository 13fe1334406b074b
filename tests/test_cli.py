"""The CLI as users see it: `main()` (the `sds3d` entry point) formats errors as a message and a hint.

Most tests call ``main()`` in-process (fast); two run it in a subprocess to see the real stderr.
"""

import subprocess
import sys

import pytest

from sds3d.cli import main
from sds3d.config import load_config, save_config

OVERRIDE_KEYS = ("guide.model", "train.steps", "seed", "objective.name", "objective.guidance_scale", "out_dir")
SMALL_SCENE = ["scene.encoding.levels=2", "scene.encoding.log2_table_size=8", "scene.encoding.max_resolution=16",
               "scene.encoding.start_level=1"]


def cli(monkeypatch, capsys, *args):
    """Runs ``sds3d ARGS`` in-process; returns (exit code, stdout, stderr)."""
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(sys, "argv", ["sds3d", *map(str, args)])
    with pytest.raises(SystemExit) as info:
        main()
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


def test_unknown_option_is_a_usage_error_not_a_traceback(monkeypatch, capsys):
    code, _, err = cli(monkeypatch, capsys, "run", "a red cube", "--out", "folder")
    assert code == 2
    assert "No such option: --out" in err and "Traceback" not in err


def cli_subprocess(*args):
    cmd = [sys.executable, "-c", "from sds3d.cli import main; main()", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def saved_run(folder, overrides=()):
    folder.mkdir(exist_ok=True)
    save_config(load_config(prompt="a red cube", overrides=[*SMALL_SCENE, *overrides]), folder / "config.yaml")
    return folder


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"]], ids=["app", "run"])
def test_help_mentions_the_override_keys(monkeypatch, capsys, args):
    code, out, _ = cli(monkeypatch, capsys, *args)
    assert code == 0
    assert "key.path=value" in out
    for key in OVERRIDE_KEYS:
        assert key in out, key


def test_configs_lists_shipped_configs_and_objectives(monkeypatch, capsys):
    code, out, _ = cli(monkeypatch, capsys, "configs")
    assert code == 0
    names = [line.split()[0] for line in out.splitlines() if line.startswith("  ")]
    assert {"base", "dreamfusion-sd", "sds"} <= set(names)
    assert "objective.name=NAME" in out


def test_run_without_a_prompt_is_a_clean_error():
    result = cli_subprocess("run")
    assert result.returncode == 2
    assert "error: no prompt given" in result.stderr
    assert "hint: " in result.stderr and "sds3d run" in result.stderr
    assert "Traceback" not in result.stderr


def test_debug_shows_the_traceback():
    result = cli_subprocess("--debug", "run")
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "ConfigError" in result.stderr and "no prompt given" in result.stderr


def test_unknown_key_exits_2_naming_the_key(monkeypatch, capsys):
    code, _, err = cli(monkeypatch, capsys, "run", "a red cube", "train.stepz=5")
    assert code == 2
    assert "error: unknown config key 'train.stepz'" in err
    assert "hint: valid keys in 'train'" in err and "steps" in err


def test_two_prompts_are_a_clear_error(monkeypatch, capsys):
    code, _, err = cli(monkeypatch, capsys, "run", "a red cube", "a blue ball")
    assert code == 2
    assert "expected one prompt, got 2" in err and "a blue ball" in err
    assert "hint: quote the prompt" in err


def test_resume_of_a_folder_without_a_run_is_a_clear_error(monkeypatch, capsys, tmp_path):
    code, _, err = cli(monkeypatch, capsys, "run", "--resume", tmp_path)
    assert code == 2
    assert "error: " in err and "config.yaml" in err and "does not exist" in err
    assert "hint: give a run folder made by `sds3d run`" in err


def test_resume_of_a_run_without_a_checkpoint_is_a_clear_error(monkeypatch, capsys, tmp_path):
    run_dir = saved_run(tmp_path / "run")
    code, _, err = cli(monkeypatch, capsys, "run", "--resume", run_dir)
    assert code == 2
    assert "has no checkpoint to resume from" in err and str(run_dir) in err
    assert "hint: " in err


def test_resume_with_a_prompt_is_refused(monkeypatch, capsys, tmp_path):
    code, _, err = cli(monkeypatch, capsys, "run", "--resume", saved_run(tmp_path / "run"), "a blue ball")
    assert code == 2
    assert "--resume continues a run with its saved config" in err and "hint: drop the prompt" in err


def test_export_of_a_missing_folder_is_a_clear_error(monkeypatch, capsys, tmp_path):
    code, _, err = cli(monkeypatch, capsys, "export", tmp_path / "missing")
    assert code == 2
    assert "error: " in err and "missing" in err and "does not exist" in err
    assert "hint: give a run folder made by `sds3d run`" in err


def test_export_of_a_run_without_a_checkpoint_is_a_clear_error(monkeypatch, capsys, tmp_path):
    code, _, err = cli(monkeypatch, capsys, "export", saved_run(tmp_path / "run"))
    assert code == 2
    assert "error: no checkpoint at" in err and "last.pt" in err
    assert "hint: " in err


def test_export_rejects_an_unknown_format(monkeypatch, capsys, tmp_path):
    code, _, err = cli(monkeypatch, capsys, "export", saved_run(tmp_path / "run"), "--format", "stl")
    assert code == 2
    assert "unknown format 'stl'" in err and "glb" in err


BAD_FILES = {
    "config-syntax.yaml": (b"train:\n  steps: [1,\n", ["-c"], "line 3, column 1"),
    "config-list.yaml": (b"- a\n- b\n", ["-c"], "must be a mapping of sections"),
    "layout-syntax.yaml": (b"prompt: x\nobjects: [1,\n", ["--layout"], "line 3, column 1"),
    "layout-binary.yaml": (bytes(range(128, 256)), ["--layout"], "is not UTF-8 text"),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_bad_files_are_one_clear_error(monkeypatch, capsys, tmp_path, name):
    content, option, message = BAD_FILES[name]
    (tmp_path / name).write_bytes(content)
    code, _, err = cli(monkeypatch, capsys, "run", "a red cube", *option, tmp_path / name, f"out_dir={tmp_path / 'out'}")
    assert code == 2 and message in err and str(tmp_path / name) in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # nothing written


def test_a_binary_prompts_file_is_a_clear_error(monkeypatch, capsys, tmp_path):
    (tmp_path / "prompts.txt").write_bytes(bytes(range(128, 256)))
    code, _, err = cli(monkeypatch, capsys, "batch", tmp_path / "prompts.txt")
    assert code == 2 and "prompts file" in err and "is not UTF-8 text" in err


def test_a_seed_beyond_64_bits_is_a_clear_error(monkeypatch, capsys, tmp_path):
    code, _, err = cli(monkeypatch, capsys, "run", "a red cube", "seed=123456789012345678901234567890", f"out_dir={tmp_path}")
    assert code == 2 and "does not fit in 64 bits" in err
