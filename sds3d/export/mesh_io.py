"""Meshes, videos and images to disk, each written atomically."""

from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import trimesh

from sds3d.atomic import atomic_write
from sds3d.errors import ExportError

MESH_FORMATS = ("glb", "obj", "ply")


def write_mesh(mesh: trimesh.Trimesh, path: Path, fmt: str | None = None) -> Path:
    """Write ``mesh`` with its vertex colours as GLB (COLOR_0), OBJ or binary PLY.

    The format comes from ``fmt``, else from the file suffix.
    """
    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    if fmt not in MESH_FORMATS:
        raise ExportError(
            f"unknown mesh format {fmt!r} for {path}", hint=f"use one of: {', '.join(MESH_FORMATS)}"
        )
    with atomic_write(path) as tmp:
        mesh.export(tmp, file_type=fmt)
    return path


def _to_uint8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    return np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)


def write_video(frames: list[np.ndarray], path: Path, fps: int = 15) -> Path:
    """Write HxWx3 frames (uint8, or float in [0,1]) as H.264 video; the suffix (.mp4) picks the container."""
    path = Path(path)
    if not frames:
        raise ExportError(f"no frames to write to {path}")
    shapes = {np.shape(frame) for frame in frames}
    if len(shapes) != 1:
        raise ExportError(f"video frames differ in size: {sorted(shapes)}")
    video = np.stack([_to_uint8(frame) for frame in frames])
    # yuv420p needs even sides; repeat the last row/column rather than let ffmpeg rescale.
    h, w = video.shape[1:3]
    video = np.pad(video, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    with atomic_write(path) as tmp:
        imageio.mimwrite(tmp, video, format="FFMPEG", fps=fps, macro_block_size=1)
    return path


def write_image(image: np.ndarray, path: Path) -> Path:
    """Write an HxWx3 image (uint8, or float in [0,1]) as PNG."""
    path = Path(path)
    with atomic_write(path) as tmp:
        imageio.imwrite(tmp, _to_uint8(image), format="PNG")
    return path
