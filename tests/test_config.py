import re

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ReadonlyConfigError

from sds3d.config import CONFIGS_DIR, load_config, load_saved_config, save_config, schedule, shipped_configs
from sds3d.errors import ConfigError

SHIPPED = sorted(CONFIGS_DIR.glob("*.yaml"))


def config_error(**kwargs) -> ConfigError:
    kwargs = {"prompt": "a red cube", **kwargs}
    with pytest.raises(ConfigError) as info:
        load_config(**kwargs)
    return info.value


def test_base_with_a_prompt_loads():
    cfg = load_config(prompt="a red cube")
    assert cfg.prompt.text == "a red cube"
    assert cfg.objective.name == "sds" and cfg.train.steps > 0


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_config_loads_with_a_prompt(path):
    by_path = load_config(str(path), prompt="a red cube")
    by_name = load_config(path.stem, prompt="a red cube")
    assert by_path == by_name
    assert by_path.prompt.text == "a red cube"


def test_shipped_configs_are_found_on_disk():
    assert {"base", "dreamfusion-sd"} <= set(shipped_configs())
    assert shipped_configs() == sorted(p.stem for p in SHIPPED)


def test_dreamfusion_sd_recipe():
    cfg = load_config("dreamfusion-sd", prompt="a red cube")
    assert cfg.objective.guidance_scale == 101.0
    assert cfg.guide.model == "stabilityai/stable-diffusion-2-1-base"
    assert cfg.train.steps == 10000
    assert cfg.scene.encoding.levels == 16 and cfg.render.width == 64  # GPU-sized, unlike the CPU base
    assert cfg.cameras == load_config(prompt="x").cameras  # the rest comes from base


@pytest.mark.parametrize("name", [n for n in shipped_configs() if n.endswith("-sd")])
def test_every_stable_diffusion_recipe_keeps_the_papers_colour_weighting_guidance_and_shading(name):
    """The colour gate, the blend towards uniform weighting, the falling CFG scale and deferred shading are tuned
    on the bundled prior; a method's prior recipe must not carry them onto SD."""
    cfg = load_config(name, prompt="a red cube")
    objective = cfg.objective
    assert objective.colour_t_max == 1.0 and objective.uniform_mix == 0.0
    assert isinstance(objective.guidance_scale, (int, float))
    assert cfg.render.deferred_shading is False


def test_nfsd_on_stable_diffusion_keeps_sdss_t_range_not_the_prior_recipes_fall():
    assert load_config("nfsd", prompt="a red cube").objective.t_max != load_config(prompt="a red cube").objective.t_max
    assert load_config("nfsd-sd", prompt="a red cube").objective.t_max == load_config("dreamfusion-sd", prompt="a red cube").objective.t_max


def test_base_uses_the_bundled_prior():
    from sds3d.config import ASSETS_DIR

    assert load_config(prompt="a red cube").guide.model == str(ASSETS_DIR / "prior")


def test_overrides_apply_with_their_types():
    cfg = load_config(prompt="x", overrides=["train.steps=5", "objective.guidance_scale=50", "render.background.color=[0,0.5,1]",
                                             "prompt.view_dependent=false", "out_dir=my-runs"])
    assert cfg.train.steps == 5 and type(cfg.train.steps) is int
    assert cfg.objective.guidance_scale == 50
    assert list(cfg.render.background.color) == [0.0, 0.5, 1.0]
    assert cfg.prompt.view_dependent is False and cfg.out_dir == "my-runs"


def test_prompt_argument_and_prompt_overrides_combine():
    cfg = load_config(prompt="from argument", overrides=["prompt.negative=blurry"])
    assert cfg.prompt.text == "from argument" and cfg.prompt.negative == "blurry"


def test_schedule_override_is_accepted_and_evaluates():
    cfg = load_config(prompt="x", overrides=["objective.t_max=[0,0.98,0.5,100]"])
    t_max = cfg.objective.t_max
    for total in (400, 10_000):  # in steps, the run's length does not matter
        assert schedule(t_max, -10, total) == pytest.approx(0.98)
        assert schedule(t_max, 0, total) == pytest.approx(0.98)
        assert schedule(t_max, 50, total) == pytest.approx(0.74)
        assert schedule(t_max, 100, total) == pytest.approx(0.5)
        assert schedule(t_max, 10_000, total) == pytest.approx(0.5)


def test_a_schedule_whose_end_step_is_a_fraction_anneals_by_fraction_of_the_run():
    cfg = load_config(prompt="x", overrides=["objective.t_max=[0.25,0.98,0.5,0.5]"])
    t_max = cfg.objective.t_max
    for total in (400, 10_000):
        assert schedule(t_max, int(0.25 * total), total) == pytest.approx(0.98)
        assert schedule(t_max, int(0.375 * total), total) == pytest.approx(0.74)
        assert schedule(t_max, int(0.5 * total), total) == pytest.approx(0.5)
    assert schedule([0, 1.0, 3.0, 1], 1, 100) == 3.0  # an integer 1 is step 1, not the whole run


def test_schedule_of_a_number_is_constant():
    assert schedule(7, 0, 100) == 7.0 and schedule(0.25, 10**6, 100) == 0.25


def test_schedule_with_adjacent_steps_is_a_step_change():
    value = [10, 1.0, 3.0, 11]
    assert [schedule(value, s, 100) for s in (9, 10, 11, 12)] == [1.0, 1.0, 3.0, 3.0]


def test_unknown_key_names_it_and_lists_the_section():
    err = config_error(overrides=["train.stepz=5"])
    assert "train.stepz" in str(err)
    assert "'train'" in err.hint and "steps" in err.hint and "ckpt_every" in err.hint


def test_unknown_top_level_key_lists_the_top_level_keys():
    err = config_error(overrides=["colour=red"])
    assert "colour" in str(err)
    assert all(k in err.hint for k in ("prompt", "seed", "out_dir", "guide", "train"))


@pytest.mark.parametrize("override, key", [("train.steps=abc", "train.steps"), ("train.steps=1.5", "train.steps"),
                                           ("prompt.view_dependent=maybe", "prompt.view_dependent")])
def test_wrong_type_names_the_key(override, key):
    err = config_error(overrides=[override])
    assert key in str(err) and override.split("=")[1] in str(err)
    assert "base.yaml" in err.hint


def test_missing_prompt():
    err = config_error(prompt=None)
    assert "no prompt" in str(err)
    assert "sds3d run" in err.hint and "prompt.text" in err.hint


def test_empty_prompt():
    err = config_error(prompt="   ")
    assert "empty" in str(err) and "prompt" in str(err)
    assert "sds3d run" in err.hint


def test_missing_config_file_lists_the_shipped_configs():
    err = config_error(config="no-such-config")
    assert "no-such-config" in str(err) and "does not exist" in str(err)
    assert "base" in err.hint and "dreamfusion-sd" in err.hint


def test_unknown_objective_lists_the_choices():
    err = config_error(overrides=["objective.name=dreamfuse"])
    assert "objective.name" in str(err) and "dreamfuse" in str(err)
    assert "sds" in err.hint and "csd" in err.hint


@pytest.mark.parametrize("value", ["[0,0.98,0.5]", "[100,0.98,0.5,0]", "abc", "true"])
def test_bad_schedule_is_rejected(value):
    err = config_error(overrides=[f"objective.t_max={value}"])
    assert "objective.t_max" in str(err) and "start_step" in str(err)
    assert "objective.t_max" in err.hint


def test_unknown_normals_choice_lists_the_choices():
    err = config_error(overrides=["scene.normals=sobel"])
    assert "scene.normals" in str(err) and "sobel" in str(err)
    assert "analytic" in err.hint and "finite_difference" in err.hint


def test_unknown_export_format():
    err = config_error(overrides=["export.formats=[glb,stl]"])
    assert "export.formats" in str(err) and "stl" in str(err)
    assert all(f in err.hint for f in ("glb", "obj", "ply"))


def test_inverted_range_is_rejected():
    err = config_error(overrides=["cameras.fovy_range=[70,40]"])
    assert "cameras.fovy_range" in str(err) and "70" in str(err) and "40" in str(err)
    assert "cameras.fovy_range" in err.hint


@pytest.mark.parametrize("value", ["[40]", "[40,50,60]"])
def test_range_of_the_wrong_length_is_a_config_error(value):
    err = config_error(overrides=[f"cameras.fovy_range={value}"])
    assert "cameras.fovy_range" in str(err)


def test_override_without_equals_sign():
    err = config_error(overrides=["train.steps"])
    assert "train.steps" in str(err)
    assert "key.path=value" in err.hint


def test_defaults_resolve_base_from_the_shipped_configs(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("defaults: [base]\ntrain:\n  steps: 7\n")
    cfg = load_config(str(path), prompt="x")
    assert cfg.train.steps == 7
    assert cfg.render.samples == load_config(prompt="x").render.samples


def test_defaults_prefer_a_file_beside_the_config(tmp_path):
    (tmp_path / "parent.yaml").write_text("defaults: [base]\nseed: 11\ntrain:\n  steps: 3\n")
    (tmp_path / "child.yaml").write_text("defaults: [parent]\ntrain:\n  steps: 9\n")
    cfg = load_config(str(tmp_path / "child.yaml"), prompt="x")
    assert cfg.seed == 11 and cfg.train.steps == 9


def test_two_defaults_sharing_base_merge_it_once(tmp_path):
    """A recipe on a model (dreamfusion-sd) plus a method (csd): csd's own base must not undo the recipe."""
    (tmp_path / "recipe.yaml").write_text("defaults: [base]\nseed: 11\ntrain:\n  steps: 3\n  lr_network: 0.5\n")
    (tmp_path / "method.yaml").write_text("defaults: [base]\ntrain:\n  steps: 5\n")
    (tmp_path / "both.yaml").write_text("defaults: [recipe, method]\ntrain:\n  lr_encoding: 0.25\n")
    cfg = load_config(str(tmp_path / "both.yaml"), prompt="x")
    assert (cfg.seed, cfg.train.steps, cfg.train.lr_network, cfg.train.lr_encoding) == (11, 5, 0.5, 0.25)


def test_a_config_that_includes_itself_is_an_error(tmp_path):
    (tmp_path / "loop.yaml").write_text("defaults: [loop]\nseed: 1\n")
    err = config_error(config=str(tmp_path / "loop.yaml"))
    assert "includes itself" in str(err) and "loop.yaml" in str(err)


def test_loaded_config_is_read_only():
    cfg = load_config(prompt="x")
    with pytest.raises(ReadonlyConfigError):
        cfg.train.steps = 3
    with pytest.raises(ReadonlyConfigError):
        cfg.prompt.text = "y"


def test_save_and_load_saved_config_round_trip(tmp_path):
    cfg = load_config("dreamfusion-sd", prompt="a red cube", overrides=["objective.t_max=[0,0.98,0.5,100]"])
    save_config(cfg, tmp_path / "config.yaml")
    loaded = load_saved_config(tmp_path / "config.yaml")
    assert loaded == cfg
    assert OmegaConf.to_container(loaded, resolve=True) == OmegaConf.to_container(cfg, resolve=True)
    assert OmegaConf.is_readonly(loaded)


def test_load_saved_config_applies_overrides(tmp_path):
    save_config(load_config(prompt="x"), tmp_path / "config.yaml")
    assert load_saved_config(tmp_path / "config.yaml", ["train.steps=20000"]).train.steps == 20000


def test_load_saved_config_of_a_missing_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_saved_config(tmp_path / "config.yaml")
    assert "config.yaml" in str(info.value) and "sds3d run" in info.value.hint


@pytest.mark.parametrize(
    "override, named",
    [
        ("objective.t_schedule=linear", "objective.t_schedule"),
        ("objective.weighting=ism", "objective.weighting"),
        ("objective.dreamtime=[0.8,0.5,0.3]", "objective.dreamtime"),
        ("prompt.perp_neg.f_fs=[1.0,2.0]", "prompt.perp_neg.f_fs"),
        ("objective.nfsd.switch=1.5", "objective.nfsd.switch"),
        ("objective.vsd.camera_dropout=-0.1", "objective.vsd.camera_dropout"),
        ("objective.ism.inversion_steps=0", "objective.ism.inversion_steps"),
        ("objective.csd.negative_scale=[0,1]", "objective.csd.negative_scale"),
        ("objective.csd.bogus=1", "objective.csd.bogus"),
        ("image.space=pixels", "image.space"),
    ],
)
def test_objective_family_keys_are_checked(override, named):
    with pytest.raises(ConfigError, match=re.escape(named)):
        load_config(prompt="a red cube", overrides=[override])


def test_perp_neg_needs_view_dependent_prompts():
    with pytest.raises(ConfigError, match="view-dependent"):
        load_config(prompt="a red cube", overrides=["prompt.perp_neg.enabled=true", "prompt.view_dependent=false"])
