"""Turn a trained scene into files: a coloured or textured mesh, a turntable video, images."""

from sds3d.export.decimate import decimate
from sds3d.export.gltf import TEXTURED_FORMATS, write_textured
from sds3d.export.isosurface import auto_threshold, extract_mesh, grid_values, mesh_grid, sample_grid, silhouette_threshold
from sds3d.export.mesh_io import MESH_FORMATS, write_image, write_mesh, write_video
from sds3d.export.texture import bake_texture

__all__ = [
    "MESH_FORMATS",
    "TEXTURED_FORMATS",
    "auto_threshold",
    "bake_texture",
    "decimate",
    "extract_mesh",
    "grid_values",
    "mesh_grid",
    "sample_grid",
    "silhouette_threshold",
    "write_image",
    "write_mesh",
    "write_textured",
    "write_video",
]
