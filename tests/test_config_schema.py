"""The schema is the one source of the configuration: base.yaml, validation, `sds3d keys` and `run --help` follow it."""

import dataclasses

import pytest
from omegaconf import OmegaConf
from typer.testing import CliRunner

from sds3d.cli import app
from sds3d.config import CONFIGS_DIR, load_config
from sds3d.config_docs import base_yaml
from sds3d.config_schema import RunConfig, choices, default, fields
from sds3d.errors import ConfigError, Sds3dError

LEAVES = [(key, f) for key, f, _ in fields() if not dataclasses.is_dataclass(f.type)]


def test_base_yaml_is_generated_from_the_schema():
    assert (CONFIGS_DIR / "base.yaml").read_text() == base_yaml(), \
        "configs/base.yaml drifted from sds3d/config_schema.py: run `python -m sds3d.config_docs`"


def test_every_key_is_documented():
    assert [key for key, f in LEAVES if not f.metadata.get("doc")] == []


def test_the_schema_alone_holds_every_default():
    schema_only = OmegaConf.to_container(OmegaConf.structured(RunConfig))
    schema_only["prompt"]["text"] = "a red cube"
    from_base = OmegaConf.to_container(load_config(prompt="a red cube"), resolve=False)
    assert schema_only == from_base


@pytest.mark.parametrize("key, f", [(k, f) for k, f in LEAVES if choices(f)], ids=lambda v: v if isinstance(v, str) else "")
def test_every_choice_field_rejects_an_unknown_value_and_names_its_choices(key, f):
    value = "[nope]" if isinstance(default(f), list) else "nope"
    with pytest.raises(ConfigError) as err:
        load_config(prompt="a red cube", overrides=[f"{key}={value}"])
    assert f"{key}: unknown" in str(err.value) and "'nope'" in str(err.value)
    assert all(c in err.value.hint for c in choices(f))


@pytest.mark.parametrize("key, f", [(k, f) for k, f in LEAVES if f.metadata.get("low") is not None
                                    or f.metadata.get("positive")], ids=lambda v: v if isinstance(v, str) else "")
def test_every_bounded_key_rejects_a_value_below_its_range_with_its_documentation_as_hint(key, f):
    low = f.metadata["low"] if f.metadata.get("low") is not None else 0
    below = low - 1 if isinstance(default(f), int) else low - 0.5
    with pytest.raises(ConfigError, match=key) as err:
        load_config(prompt="a red cube", overrides=[f"{key}={below}"])
    assert err.value.hint == f.metadata["doc"]


def test_keys_lists_a_section_with_defaults_and_meanings():
    result = CliRunner().invoke(app, ["keys", "objective.csd"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert [line.split(" = ")[0] for line in lines] == [f"objective.csd.{k}" for k in ("cond_scale", "negative_scale",
                                                                                       "null_scale", "noise_scale")]
    assert "(schedule)" in lines[0] and "-1.0" in lines[2]


def test_keys_of_an_unknown_section_names_it():
    result = CliRunner().invoke(app, ["keys", "objective.nope"])
    assert isinstance(result.exception, Sds3dError) and "objective.nope" in str(result.exception)


def test_run_help_lists_the_sections():
    result = CliRunner().invoke(app, ["run", "--help"])
    assert all(name in result.output for name in ("objective", "render", "export", "sds3d keys"))


def test_keys_shows_what_validation_accepts():
    listing = {line.split(" = ")[0]: line for line in CliRunner().invoke(app, ["keys"]).output.splitlines()}
    assert listing["objective.name"].endswith("[one of: sds, sjc, vsd, csd, nfsd, ism, bsd, csm, semantic]")
    assert listing["objective.colour_t_max"].endswith("[0 to 1]") and listing["train.steps"].endswith("[above 0]")
