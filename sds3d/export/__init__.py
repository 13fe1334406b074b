"""Turn a trained scene into files: a coloured mesh, a turntable video, images."""

from sds3d.export.isosurface import auto_threshold, extract_mesh, sample_grid
from sds3d.export.mesh_io import MESH_FORMATS, write_image, write_mesh, write_video

__all__ = [
    "MESH_FORMATS",
    "auto_threshold",
    "extract_mesh",
    "sample_grid",
    "write_image",
    "write_mesh",
    "write_video",
]
