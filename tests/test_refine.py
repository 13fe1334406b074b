"""The mesh stage: from a tiny NeRF run to a refined, textured mesh; its scene, regularisers and bad input."""

import json

import pytest
import torch
import trimesh

from sds3d import api
from sds3d.config import load_config
from sds3d.errors import CheckpointError, ConfigError, ExportError
from sds3d.scene.mesh import MeshScene, TextureField
from sds3d.scene.nerf import NeRFField

NERF = ["train.steps=4", "train.val_every=0", "export.formats=[glb]", "export.video_frames=0"]
REFINE = ["refine.steps=3", "refine.width=32", "refine.height=32", "refine.mesh_resolution=32",
          "export.formats=[glb,obj]", "export.texture_resolution=64", "export.max_faces=2000", "train.log_every=1"]


@pytest.fixture(scope="module")
def nerf_run(tiny_config, tiny_sd_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("refine") / "run"
    return api.generate("a hamburger", tiny_config, [f"guide.model={tiny_sd_dir}", *NERF], run_dir=run_dir).run_dir


def test_refine_writes_a_textured_mesh_and_a_run_folder(nerf_run):
    result = api.refine(nerf_run, overrides=REFINE)
    assert result.run_dir == nerf_run / "refine" and result.steps == 3
    for name in ("config.yaml", "ckpt/last.pt", "progress/step-00003.png", "mesh.glb", "mesh.obj"):
        assert (result.run_dir / name).is_file(), name
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert {"loss/objective", "loss/laplacian", "loss/normal_consistency"} <= records[-1].keys()
    mesh = trimesh.load(result.run_dir / "mesh.glb", force="mesh")
    assert len(mesh.faces) > 0 and mesh.visual.material.baseColorTexture.size == (64, 64)
    scene = torch.load(result.run_dir / "ckpt" / "last.pt", weights_only=False)["scene"]
    assert scene["field.offsets"].abs().max() > 0  # the geometry moved


def test_refine_resumes_to_more_steps(nerf_run):
    api.refine(nerf_run, overrides=REFINE)
    resumed = api.refine(nerf_run, overrides=["refine.steps=5"], resume=True)
    assert resumed.steps == 5
    assert json.loads((resumed.run_dir / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 5


def test_texture_field_starts_as_the_nerf_albedo(tiny_config):
    cfg = load_config(tiny_config, prompt="x")
    field = NeRFField(cfg.scene)
    torch.nn.init.normal_(field.encoding.table, std=0.5)
    points = torch.rand(100, 3) * 2 - 1
    torch.testing.assert_close(TextureField.from_nerf(field)(points), field(points)[1])


def octahedron(texture):
    vertices = torch.tensor([[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]])
    faces = torch.tensor([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])
    return MeshScene(vertices, faces, texture)


def test_regularisers_on_an_octahedron(tiny_config):
    # Each vertex's four neighbours average to the origin, so |v - mean|^2 = |v|^2 = 1; adjacent face
    # normals (+-1, +-1, +-1)/sqrt(3) differ in one sign, so 1 - cos = 2/3 on every edge.
    mesh = octahedron(TextureField(load_config(tiny_config, prompt="x").scene))
    torch.testing.assert_close(mesh.laplacian_loss(), torch.tensor(1.0))
    torch.testing.assert_close(mesh.normal_consistency_loss(), torch.tensor(2.0 / 3.0))


def test_bad_input_is_a_clear_error(tiny_config, nerf_run, tmp_path):
    (tmp_path / "config.yaml").write_text((nerf_run / "config.yaml").read_text())
    with pytest.raises(CheckpointError, match="no checkpoint"):
        api.refine(tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        api.refine(tmp_path / "missing")
    with pytest.raises(ExportError, match="empty"):
        MeshScene(torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.long), TextureField(load_config(tiny_config, prompt="x").scene))
