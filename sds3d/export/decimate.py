"""Quadric decimation to a face budget, so UV unwrapping and files stay small for dense isosurfaces."""

import numpy as np
import trimesh

from sds3d.errors import ExportError


def decimate(mesh: trimesh.Trimesh, max_faces: int) -> trimesh.Trimesh:
    """``mesh`` itself when it has at most ``max_faces`` faces (0: no budget), else a quadric-decimated
    copy with at most ``max_faces`` faces (fast-simplification), without the folds decimation leaves
    (``without_folds``). The copy has no vertex colours."""
    if max_faces < 0:
        raise ExportError(f"face budget must be 0 (none) or positive, got {max_faces}", hint="e.g. export.max_faces=20000")
    if max_faces == 0 or len(mesh.faces) <= max_faces:
        return mesh
    if max_faces < 4:
        raise ExportError(f"face budget {max_faces} is too small for a closed surface", hint="use export.max_faces=1000 or more")
    return without_folds(mesh.simplify_quadric_decimation(face_count=max_faces))


def without_folds(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """``mesh`` without zero-area faces and back-to-back face pairs (two faces on the same three vertices),
    and without the vertices only they used. Such vertices get zero normals, which glTF validators report
    as errors, and quadric decimation leaves a few of both."""
    corners = np.sort(mesh.faces, axis=1)
    _, group, count = np.unique(corners, axis=0, return_inverse=True, return_counts=True)
    keep = mesh.nondegenerate_faces() & (count[group.reshape(-1)] == 1)
    if keep.all():
        return mesh
    cleaned = trimesh.Trimesh(mesh.vertices, mesh.faces[keep], process=False)
    cleaned.remove_unreferenced_vertices()
    return cleaned
