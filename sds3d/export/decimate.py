"""Quadric decimation to a face budget, so UV unwrapping and files stay small for dense isosurfaces."""

import trimesh

from sds3d.errors import ExportError


def decimate(mesh: trimesh.Trimesh, max_faces: int) -> trimesh.Trimesh:
    """``mesh`` itself when it has at most ``max_faces`` faces (0: no budget), else a quadric-decimated
    copy with at most ``max_faces`` faces (fast-simplification). The copy has no vertex colours."""
    if max_faces < 0:
        raise ExportError(f"face budget must be 0 (none) or positive, got {max_faces}", hint="e.g. export.max_faces=20000")
    if max_faces == 0 or len(mesh.faces) <= max_faces:
        return mesh
    if max_faces < 4:
        raise ExportError(f"face budget {max_faces} is too small for a closed surface", hint="use export.max_faces=1000 or more")
    return mesh.simplify_quadric_decimation(face_count=max_faces)
