"""Textured meshes to disk: GLB with a PBR base-colour texture, OBJ + MTL + PNG; each file written atomically."""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import trimesh
from PIL import Image
from trimesh.exchange.obj import export_obj
from trimesh.visual.material import PBRMaterial, SimpleMaterial

from sds3d.atomic import atomic_write
from sds3d.errors import ExportError

TEXTURED_FORMATS = ("glb", "obj")
# A matte, non-metal surface: the baked albedo is all the asset knows about its material.
METALLIC, ROUGHNESS = 0.0, 0.9


def pbr_material(image: Image.Image, name: str = "mesh") -> PBRMaterial:
    return PBRMaterial(
        name=name,
        baseColorTexture=image,
        baseColorFactor=[255, 255, 255, 255],
        metallicFactor=METALLIC,
        roughnessFactor=ROUGHNESS,
    )


def _with_material(mesh: trimesh.Trimesh, material) -> trimesh.Trimesh:
    textured = mesh.copy()
    textured.visual = trimesh.visual.TextureVisuals(uv=mesh.visual.uv, material=material)
    return textured


def _check(mesh: trimesh.Trimesh, texture: np.ndarray, formats: Sequence[str]) -> None:
    unknown = [f for f in formats if f not in TEXTURED_FORMATS]
    if unknown:
        raise ExportError(f"unknown textured mesh format(s): {', '.join(unknown)}", hint=f"use any of: {', '.join(TEXTURED_FORMATS)}")
    if texture.dtype != np.uint8 or texture.ndim != 3 or texture.shape[2] != 3:
        raise ExportError(f"texture must be an HxWx3 uint8 image, got {texture.dtype} {texture.shape}")
    uv = getattr(mesh.visual, "uv", None)
    if uv is None or len(uv) != len(mesh.vertices):
        raise ExportError("the mesh has no per-vertex UVs", hint="unwrap it first with bake_texture")


def write_textured(
    mesh: trimesh.Trimesh,
    texture: np.ndarray,
    out_dir: Path,
    stem: str = "mesh",
    formats: Sequence[str] = TEXTURED_FORMATS,
) -> list[Path]:
    """Write ``mesh`` (with UVs in ``mesh.visual``, OBJ convention: v up from the bottom) textured with
    ``texture`` [H,W,3] uint8 as ``<stem>.glb`` (PBR material, embedded PNG, metallic 0, roughness 0.9)
    and/or ``<stem>.obj`` + ``<stem>.mtl`` + ``<stem>.png`` (map_Kd). Returns the GLB/OBJ paths.
    """
    _check(mesh, texture, formats)
    out_dir = Path(out_dir)
    image = Image.fromarray(texture)
    paths = []
    for fmt in formats:
        path = out_dir / f"{stem}.{fmt}"
        if fmt == "glb":
            data = _with_material(mesh, pbr_material(image, stem)).export(file_type="glb", include_normals=True)
            with atomic_write(path) as tmp:
                tmp.write_bytes(data)
        else:
            # Kd 1 and no ambient/specular: OBJ viewers multiply map_Kd by Kd (trimesh's default is 0.4).
            material = SimpleMaterial(name=stem, image=image, ambient=[0, 0, 0, 255], diffuse=[255, 255, 255, 255],
                                      specular=[0, 0, 0, 255])
            text, files = export_obj(_with_material(mesh, material), include_normals=True, return_texture=True,
                                     mtl_name=f"{stem}.mtl", header=None)
            # The PNG and MTL land before the OBJ that names them.
            for name in (f"{stem}.png", f"{stem}.mtl"):
                with atomic_write(out_dir / name) as tmp:
                    tmp.write_bytes(files[name])
            with atomic_write(path) as tmp:
                tmp.write_text(text)
        paths.append(path)
    return paths
