"""Property-based fuzz of what users type and hand in: any config override and any layout file either
loads or is a clear error (an Sds3dError, which the CLI prints as one line and a hint), never another
exception, which the CLI would show as a traceback."""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from sds3d.config import CONFIGS_DIR, load_config
from sds3d.errors import Sds3dError
from sds3d.layout import load_layout

def config_keys() -> list:
    """Every dotted key of base.yaml, sections included."""
    keys = []

    def walk(node, prefix):
        for key, value in node.items():
            path = f"{prefix}{key}"
            keys.append(path)
            if isinstance(value, dict):
                walk(value, f"{path}.")

    walk(OmegaConf.to_container(OmegaConf.load(CONFIGS_DIR / "base.yaml")), "")
    return keys


SCALARS = st.one_of(st.integers(-10**20, 10**20), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                    st.text(max_size=12), st.just("null"), st.just("[]"), st.just("{}"))
VALUES = st.one_of(SCALARS.map(str), st.lists(SCALARS, max_size=5).map(lambda v: "[" + ",".join(map(str, v)) + "]"))
KEYS_OR_JUNK = st.one_of(st.sampled_from(config_keys()), st.text(min_size=1, max_size=20))
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.lists(st.tuples(KEYS_OR_JUNK, VALUES), min_size=1, max_size=3))
def test_any_override_loads_or_is_a_clear_error(pairs):
    try:
        load_config(prompt="a red cube", overrides=[f"{key}={value}" for key, value in pairs])
    except Sds3dError:
        pass


LEAF = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(-3, 3), st.text(max_size=10))
NODES = st.recursive(LEAF, lambda children: st.one_of(st.lists(children, max_size=4),
                                                      st.dictionaries(st.text(max_size=8), children, max_size=4)), max_leaves=12)
OBJECT = st.fixed_dictionaries({"prompt": st.one_of(st.text(max_size=10), NODES)},
                               optional={"center": st.one_of(st.lists(st.floats(-2, 2), max_size=4), NODES),
                                         "size": st.one_of(st.lists(st.floats(-1, 2), max_size=4), NODES),
                                         "yaw": st.one_of(st.floats(-400, 400), NODES),
                                         "parts": NODES})
LAYOUT = st.one_of(NODES, st.fixed_dictionaries({"prompt": st.one_of(st.text(max_size=10), NODES)},
                                                optional={"objects": st.one_of(st.lists(OBJECT, max_size=3), NODES)}))


@FUZZ
@given(LAYOUT)
def test_any_layout_file_loads_or_is_a_clear_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("layout") / "layout.yaml"
    path.write_text(yaml.safe_dump(data))
    try:
        load_layout(str(path), radius=1.0)
    except Sds3dError:
        pass
