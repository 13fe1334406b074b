"""Texture export: xatlas unwrap, UV-space bake with seam padding, textured GLB and OBJ, decimation."""

import io
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pygltflib
import pytest
import torch
import trimesh
from PIL import Image
from scipy.ndimage import binary_dilation
from scipy.spatial import cKDTree

from sds3d import api
from sds3d.checkpoint import save_checkpoint
from sds3d.config import load_config, save_config
from sds3d.errors import ExportError
from sds3d.export import bake_texture, decimate, write_textured
from sds3d.export import texture as texture_module
from sds3d.export.decimate import without_folds
from sds3d.export.texture import dilate, rasterize_uv
from sds3d.train import build_scene

ROOT = Path(__file__).resolve().parent.parent
VALIDATOR = ROOT / ".ci" / "node_modules" / "gltf-validator"
RES, PAD = 256, 4
# Colour error allowed: rounding to 8 bits, plus at chart edges (where bilinear taps reach padded
# texels, which hold neighbour means rather than the linear continuation) about one texel of slope.
EDGE_TOL, INTERIOR_TOL = 0.012, 0.006


def linear_rgb(points: torch.Tensor) -> torch.Tensor:
    return ((points + 1.0) / 2.0).clamp(0.0, 1.0)


def expected(points: np.ndarray) -> np.ndarray:
    return np.clip((points + 1.0) / 2.0, 0.0, 1.0)


def sample(texture: np.ndarray, px: np.ndarray) -> np.ndarray:
    """Bilinear lookup (clamped at the border) at pixel coordinates px[N,2] (x right, y down)."""
    h, w = texture.shape[:2]
    x, y = px[:, 0] - 0.5, px[:, 1] - 0.5
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    image = texture.astype(np.float64) / 255.0

    def tap(dy, dx):
        return image[np.clip(y0 + dy, 0, h - 1), np.clip(x0 + dx, 0, w - 1)]

    return (tap(0, 0) * (1 - fx) * (1 - fy) + tap(0, 1) * fx * (1 - fy)
            + tap(1, 0) * (1 - fx) * fy + tap(1, 1) * fx * fy)


def obj_uv_to_px(uv: np.ndarray, texture: np.ndarray) -> np.ndarray:
    h, w = texture.shape[:2]
    return np.stack([uv[:, 0] * w, (1.0 - uv[:, 1]) * h], axis=-1)


@pytest.fixture(scope="module")
def baked():
    return bake_texture(trimesh.creation.icosphere(subdivisions=3, radius=0.8), linear_rgb, RES, PAD)


@pytest.fixture(scope="module")
def written(baked, tmp_path_factory):
    out = tmp_path_factory.mktemp("textured")
    return write_textured(*baked, out)


def test_bake_keeps_the_surface_and_splits_vertices_at_seams(baked):
    mesh, texture = baked
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.8)
    assert texture.shape == (RES, RES, 3) and texture.dtype == np.uint8
    assert len(mesh.faces) == len(sphere.faces)
    assert len(mesh.vertices) > len(sphere.vertices)
    assert np.allclose(np.linalg.norm(mesh.vertices, axis=1), 0.8)
    assert mesh.visual.uv.shape == (len(mesh.vertices), 2)
    assert (mesh.visual.uv >= 0).all() and (mesh.visual.uv <= 1).all()


def test_texture_renders_back_the_field_at_vertices(baked):
    mesh, texture = baked
    got = sample(texture, obj_uv_to_px(mesh.visual.uv, texture))
    assert np.abs(got - expected(mesh.vertices)).max() < EDGE_TOL


def test_texture_renders_back_the_field_inside_faces(baked):
    mesh, texture = baked
    bary = np.random.default_rng(0).dirichlet([2.0, 2.0, 2.0], size=len(mesh.faces))  # [F, 3], away from edges
    uv = np.einsum("fk,fkd->fd", bary, mesh.visual.uv[mesh.faces])
    points = np.einsum("fk,fkd->fd", bary, mesh.vertices[mesh.faces])
    error = np.abs(sample(texture, obj_uv_to_px(uv, texture)) - expected(points))
    assert np.median(error) < 2 / 255 and error.max() < EDGE_TOL
    centroids = sample(texture, obj_uv_to_px(mesh.visual.uv[mesh.faces].mean(axis=1), texture))
    assert np.percentile(np.abs(centroids - expected(mesh.triangles_center)), 95) < INTERIOR_TOL


def test_constant_field_bakes_a_texture_without_dark_texels():
    _, texture = bake_texture(trimesh.creation.box(), lambda p: torch.tensor([0.2, 0.6, 0.9]).expand(len(p), 3), 64, 2)
    assert (np.abs(texture.astype(int) - [51, 153, 230]) <= 1).all()


def test_rasterize_uv_covers_texel_centres_inside_a_triangle():
    # Lower-left half of a 4x4 image (y down): centres with x + y < 4, plus those on the diagonal.
    triangle = np.array([[[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]]])
    face, bary = rasterize_uv(triangle, 4)
    col, row = np.meshgrid(np.arange(4) + 0.5, np.arange(4) + 0.5)
    assert ((face == 0) == (col + row <= 4)).all()
    inside = face == 0
    assert np.allclose(bary[inside].sum(axis=-1), 1.0)
    centres = bary[inside] @ triangle[0]
    assert np.allclose(centres, np.stack([col[inside], row[inside]], axis=-1))


def test_rasterize_uv_gives_the_same_answer_in_small_chunks(baked, monkeypatch):
    mesh, _ = baked
    triangles = obj_uv_to_px(mesh.visual.uv, np.zeros((RES, RES)))[mesh.faces]
    whole = rasterize_uv(triangles, RES)
    monkeypatch.setattr(texture_module, "_RASTER_CHUNK", 37)
    chunked = rasterize_uv(triangles, RES)
    assert np.array_equal(whole[0], chunked[0]) and np.allclose(whole[1], chunked[1])


def test_padding_fills_every_texel_within_padding_of_the_charts(baked):
    mesh, _ = baked
    uv_px = obj_uv_to_px(mesh.visual.uv, np.zeros((RES, RES)))
    covered = rasterize_uv(uv_px[mesh.faces], RES)[0] >= 0
    image = np.random.default_rng(1).random((RES, RES, 3)) * covered[..., None]
    padded, filled = dilate(image, covered, PAD)
    assert (filled == binary_dilation(covered, np.ones((2 * PAD + 1, 2 * PAD + 1)))).all()
    assert np.array_equal(padded[covered], image[covered])
    # The first ring holds the mean of each texel's covered 8-neighbours.
    ring = binary_dilation(covered, np.ones((3, 3))) & ~covered
    r, c = np.argwhere(ring[1:-1, 1:-1])[0] + 1
    window = (slice(r - 1, r + 2), slice(c - 1, c + 2))
    assert np.allclose(padded[r, c], image[window][covered[window]].mean(axis=0))


@pytest.mark.parametrize(
    ("mesh", "resolution", "padding", "match"),
    [
        (trimesh.Trimesh(np.zeros((0, 3)), np.zeros((0, 3), dtype=int)), 64, 2, "without faces"),
        (trimesh.creation.box(), 0, 2, "resolution"),
        (trimesh.creation.box(), 64, -1, "padding"),
    ],
    ids=["empty", "resolution", "padding"],
)
def test_bake_rejects_bad_input_with_an_export_error(mesh, resolution, padding, match):
    with pytest.raises(ExportError, match=match):
        bake_texture(mesh, linear_rgb, resolution, padding)


def test_folds_and_zero_area_faces_are_dropped_so_every_normal_has_unit_length():
    sphere = trimesh.creation.icosphere(subdivisions=2)
    extra = len(sphere.vertices)
    flap = [[extra, extra + 1, extra + 2], [extra + 2, extra + 1, extra]]  # back to back: its normals cancel
    mesh = trimesh.Trimesh(np.vstack([sphere.vertices, [[0.1, 0.1, 0.1], [0.2, 0.1, 0.1], [0.1, 0.2, 0.1]]]),
                           np.vstack([sphere.faces, flap, [[extra, extra, 0]]]), process=False)
    assert (np.linalg.norm(mesh.vertex_normals, axis=1) < 1e-6).any()
    cleaned = without_folds(mesh)
    assert np.array_equal(cleaned.faces, sphere.faces) and len(cleaned.vertices) == len(sphere.vertices)
    assert np.allclose(np.linalg.norm(cleaned.vertex_normals, axis=1), 1.0, atol=1e-5)


def test_decimation_meets_the_face_budget():
    sphere = trimesh.creation.icosphere(subdivisions=4)  # 5120 faces
    small = decimate(sphere, 1000)
    assert 900 <= len(small.faces) <= 1000
    assert np.abs(np.linalg.norm(small.vertices, axis=1) - 1.0).max() < 0.05
    assert decimate(sphere, 0) is sphere and decimate(sphere, 6000) is sphere
    with pytest.raises(ExportError, match="budget"):
        decimate(sphere, -1)


def test_glb_reloads_with_trimesh_as_a_textured_mesh(written, baked):
    loaded = trimesh.load(written[0], force="mesh")
    assert isinstance(loaded.visual, trimesh.visual.TextureVisuals)
    image = np.asarray(loaded.visual.material.baseColorTexture.convert("RGB"))
    assert np.array_equal(image, baked[1])
    got = sample(image, obj_uv_to_px(loaded.visual.uv, image))
    assert np.abs(got - expected(loaded.vertices)).max() < EDGE_TOL


def _accessor(gltf: pygltflib.GLTF2, index: int, width: int) -> np.ndarray:
    accessor = gltf.accessors[index]
    view = gltf.bufferViews[accessor.bufferView]
    start = view.byteOffset + (accessor.byteOffset or 0)
    data = gltf.binary_blob()[start : start + accessor.count * width * 4]
    return np.frombuffer(data, dtype=np.float32).reshape(accessor.count, width)


def test_glb_has_one_pbr_material_with_an_embedded_png_in_gltf_uv_convention(written):
    gltf = pygltflib.GLTF2().load(written[0])
    (material,) = gltf.materials
    pbr = material.pbrMetallicRoughness
    assert pbr.baseColorTexture.index == 0 and pbr.metallicFactor == 0.0 and pbr.roughnessFactor == pytest.approx(0.9)
    (texture,), (image,) = gltf.textures, gltf.images
    assert texture.source == 0 and image.mimeType == "image/png"
    (primitive,) = gltf.meshes[0].primitives
    assert primitive.material == 0 and primitive.attributes.TEXCOORD_0 is not None
    # Read the raw file: glTF puts the texture origin top-left (row = t * height).
    view = gltf.bufferViews[image.bufferView]
    png = np.asarray(Image.open(io.BytesIO(gltf.binary_blob()[view.byteOffset : view.byteOffset + view.byteLength])))
    st = _accessor(gltf, primitive.attributes.TEXCOORD_0, 2)
    positions = _accessor(gltf, primitive.attributes.POSITION, 3)
    got = sample(png, st * [png.shape[1], png.shape[0]])
    assert np.abs(got - expected(positions)).max() < EDGE_TOL


def test_obj_mtl_png_show_the_same_texture_in_obj_uv_convention(written, baked):
    obj = written[1]
    assert obj.name == "mesh.obj"
    mtl = (obj.parent / "mesh.mtl").read_text()
    assert "map_Kd mesh.png" in mtl and "Kd 1.0" in mtl
    png = np.asarray(Image.open(obj.parent / "mesh.png").convert("RGB"))
    assert np.array_equal(png, baked[1])
    # Read the raw file: OBJ puts the texture origin bottom-left (row = (1 - v) * height).
    lines = obj.read_text().splitlines()
    v = np.array([line.split()[1:4] for line in lines if line.startswith("v ")], dtype=float)
    vt = np.array([line.split()[1:3] for line in lines if line.startswith("vt ")], dtype=float)
    corners = [c.split("/") for line in lines if line.startswith("f ") for c in line.split()[1:]]
    vi, ti = (np.array([int(c[k]) - 1 for c in corners]) for k in (0, 1))
    got = sample(png, obj_uv_to_px(vt[ti], png))
    assert np.abs(got - expected(v[vi])).max() < EDGE_TOL
    loaded = trimesh.load(obj, force="mesh")
    assert isinstance(loaded.visual, trimesh.visual.TextureVisuals)
    assert np.array_equal(np.asarray(loaded.visual.material.image.convert("RGB")), baked[1])


def test_write_textured_needs_uvs_and_known_formats(baked, tmp_path):
    with pytest.raises(ExportError, match="UVs"):
        write_textured(trimesh.creation.box(), baked[1], tmp_path)
    with pytest.raises(ExportError, match="ply"):
        write_textured(*baked, tmp_path, formats=("ply",))
    assert list(tmp_path.iterdir()) == []


def test_glb_passes_the_khronos_gltf_validator(written):
    if shutil.which("node") is None:
        pytest.skip("node is not installed; the glTF validator runs on node")
    if not VALIDATOR.is_dir():
        pytest.skip(f"gltf-validator is not installed in {VALIDATOR.parent}: run `npm ci --prefix .ci`")
    done = subprocess.run(["node", str(ROOT / "tests" / "gltf_validate.mjs"), str(VALIDATOR), str(written[0])],
                          check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["issues"]["numErrors"] == 0, report["issues"]["messages"]
    assert report["info"]["hasTextures"] and report["info"]["maxUVs"] == 1


def _colourful_run(folder: Path) -> Path:
    """A run folder whose checkpoint is an untrained blob with a strongly varying albedo."""
    cfg = load_config(prompt="a red cube", overrides=["export.resolution=32", "export.texture_resolution=256"])
    scene = build_scene(cfg)
    with torch.no_grad():
        for p in scene["field"].encoding.parameters():
            p.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(0))
        scene["field"].network[-1].weight[0].zero_()  # density: the blob alone, a sphere
        scene["field"].network[-1].weight[1:].mul_(10.0)
    folder.mkdir()
    save_config(cfg, folder / "config.yaml")
    save_checkpoint(folder / "ckpt" / "last.pt", 0, scene)
    return folder


def test_run_export_bakes_the_albedo_where_vertex_colours_put_it(tmp_path):
    run_dir = _colourful_run(tmp_path / "run")
    (glb,) = api.export(run_dir, ["glb"], overrides=["export.max_faces=0"])
    textured = trimesh.load(glb, force="mesh")
    assert isinstance(textured.visual, trimesh.visual.TextureVisuals)
    image = np.asarray(textured.visual.material.baseColorTexture.convert("RGB"))
    assert image.shape == (256, 256, 3)
    (plain,) = api.export(run_dir, ["glb"], overrides=["export.texture=false", "export.max_faces=0"])
    coloured = trimesh.load(plain, force="mesh")
    distance, nearest = cKDTree(coloured.vertices).query(textured.vertices)
    assert distance.max() < 1e-5
    want = coloured.visual.vertex_colors[nearest, :3] / 255.0
    error = np.abs(sample(image, obj_uv_to_px(textured.visual.uv, image)) - want)
    assert want.std() > 0.05, "the albedo should vary over the surface"
    assert np.median(error) < 0.02 and np.percentile(error, 95) < 0.1  # axes swapped: 0.19 and 0.5


def test_export_of_an_older_run_without_texture_keys_uses_the_defaults(tmp_path):
    run_dir = _colourful_run(tmp_path / "run")
    config = (run_dir / "config.yaml").read_text()
    older = "\n".join(line for line in config.splitlines() if not line.strip().startswith(("texture", "max_faces")))
    (run_dir / "config.yaml").write_text(older)
    (glb,) = api.export(run_dir, ["glb"], overrides=["export.texture_resolution=64"])
    assert isinstance(trimesh.load(glb, force="mesh").visual, trimesh.visual.TextureVisuals)

