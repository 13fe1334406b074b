"""VSD particles (scene.particles): independent scenes, one drawn per step, one shared LoRA."""


import pytest
import torch
import trimesh

from sds3d import api
from sds3d.config import load_config
from sds3d.errors import ConfigError
from sds3d.train import build_session, particles, train_step


@pytest.fixture
def config(tiny_config, tiny_sd_dir):
    """``config(*overrides)``: tiny.yaml's VSD config with three particles on the tiny SD model."""
    fixed = [f"guide.model={tiny_sd_dir}", "objective.name=vsd", "scene.particles=3"]
    return lambda *overrides: load_config(tiny_config, [*fixed, *overrides], "a hamburger")


def snapshot(session):
    return [torch.cat([p.detach().flatten().clone() for p in view.parameters()]) for view in map(particle_params, particles(session.scene))]


def particle_params(view):
    return torch.nn.ModuleList([view["field"], view["background"]])


def test_each_step_trains_only_the_particle_it_renders(config, monkeypatch):
    session = build_session(config())
    views = particles(session.scene)
    assert len(views) == 3 and len({id(v["field"]) for v in views}) == 3
    assert sum(".vsd." in name for name, _ in session.guide.unet.named_parameters()) > 0  # one LoRA, on the shared UNet
    rendered = []
    render = session.renderer.render
    monkeypatch.setattr(session.renderer, "render", lambda field, *a, **k: rendered.append(field) or render(field, *a, **k))
    drawn = set()
    for step in range(12):
        before = snapshot(session)
        train_step(session, step)
        after = snapshot(session)
        (field,) = rendered[-1:]
        index = next(i for i, v in enumerate(views) if v["field"] is field)
        drawn.add(index)
        changed = [not torch.equal(b, a) for b, a in zip(before, after)]
        assert changed == [i == index for i in range(3)]
    assert drawn == {0, 1, 2}


def test_run_exports_every_particle_and_resumes(tiny_config, tiny_sd_dir, tmp_path):
    overrides = [f"guide.model={tiny_sd_dir}", "objective.name=vsd", "scene.particles=2", "train.steps=6",
                 "export.formats=[glb]", "export.video_frames=0"]
    result = api.generate("a hamburger", tiny_config, overrides, run_dir=tmp_path / "run")
    for path in (result.run_dir / "mesh.glb", result.run_dir / "particle-1" / "mesh.glb"):
        assert path in result.outputs and len(trimesh.load(path, force="mesh").faces) > 0
    resumed = api.resume(result.run_dir, ["train.steps=8"])
    assert resumed.steps == 8


def test_particles_must_be_positive(config):
    with pytest.raises(ConfigError, match="scene.particles"):
        config("scene.particles=0")
