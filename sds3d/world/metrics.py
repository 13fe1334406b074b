"""The ground-truth checker: how well a 3D asset or a 2D sample matches the world scene of its caption.

Masks are [H, W] or [V, H, W] in [0, 1], foreground where above 0.5; images are [.., H, W, 3] in [0, 1].
A candidate asset is seen through ``render_fn(cameras: list[Cameras]) -> (rgb [V, H, W, 3], opacity
[V, H, W])`` from the eval orbit (``sds3d.cameras.orbit_cameras``) and compared with albedo renders
of the scene, so lighting never counts against it.
"""

import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from sds3d.cameras import VIEWS, Cameras, make_cameras, orbit_cameras, sample_cameras, view_labels
from sds3d.world.render import WorldRender, render_scenes
from sds3d.world.scenes import BACKGROUND, COLORS, Scene, parse_caption

RenderFn = Callable[[List[Cameras]], Tuple[torch.Tensor, torch.Tensor]]

# A 2D sample passes when its silhouette overlaps the best-matching true view by at least half
# (PASCAL VOC's "same object" IoU: it checks extent, place and layout; at 32 px a sphere and a cube
# of the world's sizes still overlap by about 0.8, a cone or two objects by under 0.5) and every
# object's shading-free colour error is under 0.065: half of 0.13, the smallest error between two
# different world colours (orange and yellow), so a passing colour is nearer its own than any other.
# Ground-truth renders from other cameras score under 0.03.
PASS_IOU, PASS_COLOUR = 0.5, 0.065


def silhouette_iou(pred_mask: torch.Tensor, true_mask: torch.Tensor) -> float:
    """IoU of the foregrounds pooled over all views; 1.0 when both are empty."""
    pred, true = pred_mask > 0.5, true_mask > 0.5
    union = (pred | true).sum().item()
    return (pred & true).sum().item() / union if union else 1.0


def foreground_mask(rgb: torch.Tensor, background: Sequence[float] = BACKGROUND, tol: float = 0.1) -> torch.Tensor:
    """1.0 where a pixel differs from the plain background by more than ``tol`` in some channel."""
    background = torch.tensor(background, dtype=rgb.dtype, device=rgb.device)
    return ((rgb - background).abs().amax(-1) > tol).float()


def colour_error(pred_rgb: torch.Tensor, true_rgb: torch.Tensor, pred_mask: torch.Tensor, true_mask: torch.Tensor) -> float:
    """Mean absolute RGB error over pixels inside both masks; 1.0 (the worst) when they do not overlap."""
    both = (pred_mask > 0.5) & (true_mask > 0.5)
    if not both.any():
        return 1.0
    return (pred_rgb[both] - true_rgb[both]).abs().mean().item()


def shading_free_error(colour: torch.Tensor, albedo: torch.Tensor) -> float:
    """Mean absolute error of ``colour`` [3] against ``albedo`` [3] after the best brightness gain:
    white light only scales an albedo, so a lit render of the right colour scores near 0."""
    gain = (colour @ albedo) / (colour @ colour).clamp(min=1e-8)
    return (gain * colour - albedo).abs().mean().item()


def ground_truth(scene: Scene, cameras_cfg, azimuth: torch.Tensor, resolution: int) -> WorldRender:
    """Albedo renders [..] of the scene from eval cameras at the azimuths [..] (degrees), each distinct
    camera rendered once: with evenly spaced views and turns most of them coincide."""
    wrapped = torch.round(torch.remainder(azimuth.flatten(), 360.0) * 1e4) / 1e4
    distinct, index = torch.unique(wrapped, return_inverse=True)
    full = lambda value: torch.full_like(distinct, value)  # noqa: E731
    cameras = make_cameras(full(cameras_cfg.eval_elevation), distinct, full(cameras_cfg.eval_distance),
                           full(cameras_cfg.eval_fovy), resolution, resolution)
    out = render_scenes([scene] * len(distinct), cameras, shading="albedo")
    size = (*azimuth.shape, resolution, resolution)
    return WorldRender(out.rgb[index].view(*size, 3), out.mask[index].view(size), out.object_ids[index].view(size))


def best_rotation_iou(render_fn: RenderFn, scene: Scene, cameras_cfg, views: int = 4, rotations: int = 36,
                      resolution: int = 64) -> Tuple[float, float]:
    """The mean silhouette IoU over ``views`` eval views at the turn of the ground truth about the vertical
    axis (one of ``rotations``) that best matches the candidate, and that turn ``offset_deg``: the candidate
    seen from azimuth a is compared with the scene seen from a - offset_deg, i.e. offset_deg is how far the
    asset is turned (counter-clockwise seen from above) from the scene. ``cameras_cfg`` is a ``cameras``
    config section.

    The best turn maximises IoU minus colour error: silhouettes alone cannot tell a pair from itself
    turned half round with its objects' colours swapped, and scoring each object at such a turn would
    compare it with the other object."""
    cameras = orbit_cameras(cameras_cfg, views, resolution)
    rgb, opacity = (t.cpu() for t in render_fn(cameras))
    offsets = torch.arange(rotations) * 360.0 / rotations
    azimuth = torch.cat([c.azimuth for c in cameras])[None] - offsets[:, None]  # [R, V]
    truth = ground_truth(scene, cameras_cfg, azimuth, resolution)
    ious = [sum(silhouette_iou(opacity[v], truth.mask[r, v]) for v in range(views)) / views for r in range(rotations)]
    errors = [colour_error(rgb, truth.rgb[r], opacity, truth.mask[r]) for r in range(rotations)]
    best = max(range(rotations), key=lambda r: ious[r] - errors[r])
    return ious[best], offsets[best].item()


def per_object_scores(render_fn: RenderFn, scene: Scene, cameras_cfg, offset_deg: float, views: int = 4,
                      resolution: int = 64) -> List[Dict[str, float]]:
    """IoU and colour error of each object, at the turn ``best_rotation_iou`` found.

    Both foregrounds are split between the objects by the nearest visible ground-truth object (a pixel
    belongs to the object it is closest to), then each part is scored against the same object's part:
    a missing, shrunken or swollen object costs its own score, not its neighbour's.
    """
    cameras = orbit_cameras(cameras_cfg, views, resolution)
    rgb, opacity = render_fn(cameras)
    truth = ground_truth(scene, cameras_cfg, torch.cat([c.azimuth for c in cameras]) - offset_deg, resolution)
    nearest = torch.stack([_nearest_object(ids, len(scene.objects)) for ids in truth.object_ids.cpu()])
    rgb, opacity = rgb.cpu(), opacity.cpu()
    scores = []
    for k in range(len(scene.objects)):
        pred, true = ((opacity > 0.5) & (nearest == k)).float(), ((truth.mask > 0.5) & (nearest == k)).float()
        scores.append({"iou": silhouette_iou(pred, true), "colour_error": colour_error(rgb, truth.rgb, pred, true)})
    return scores


def _nearest_object(ids: torch.Tensor, count: int) -> torch.Tensor:
    """[H, W] index of the object whose visible region is nearest to each pixel (-1 when none is visible)."""
    height, width = ids.shape
    v, u = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    pixels = torch.stack([v, u], dim=-1).reshape(-1, 2).float()
    distance = torch.full((pixels.shape[0], count), math.inf)
    for k in range(count):
        region = pixels[ids.flatten() == k]
        if len(region):
            distance[:, k] = torch.cdist(pixels, region).amin(1)
    nearest = distance.argmin(1)
    return torch.where(distance.isinf().all(1), -1, nearest).view(height, width)


def score_sample(image: torch.Tensor, caption: str, cameras_cfg, candidates: int = 64, seed: int = 0,
                 camera: Optional[Cameras] = None) -> Dict[str, float]:
    """Checks a 2D sample of the prior (image [H, W, 3] in [0, 1]) against its caption's scene.

    The scene is rendered (shading "diffuse", like the prior's training images) from ``candidates``
    training cameras drawn with ``seed``, restricted to the caption's view label when it has one; the
    sample's foreground is matched to the candidate with the best IoU. The sample's pixels are given
    to the nearest object of that render, and the colour error is the worst object's shading-free error
    (``shading_free_error``) of their mean colour, so a pair with its colours swapped fails.
    Thresholds: see PASS_IOU. Given the ``camera`` the sample was drawn from (one view), the result also has
    ``own_iou``: the IoU against the scene from that camera (both foregrounds found the same way, so a true
    render scores 1), which the best-of-candidates IoU forgives; a prior that ignores the camera's turn or
    distance scores lower on it.
    """
    text, _, suffix = caption.partition(",")
    label = suffix.strip().removesuffix(" view")
    if suffix and label not in VIEWS:
        raise ValueError(f"'{caption}' has a view suffix other than ', <{'|'.join(VIEWS)}> view'")
    scene = parse_caption(text)
    height, width = image.shape[:2]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # Drawn generously when a view must match, then trimmed back to ``candidates``.
        cameras = sample_cameras(cameras_cfg, width, height, batch_size=candidates * (len(VIEWS) if suffix else 1))
    keep = [i for i, view in enumerate(view_labels(cameras.elevation, cameras.azimuth)) if not suffix or view == label][:candidates]
    if not keep:
        raise ValueError(f"the cameras never see a {label} view: {caption}")
    cameras = cameras.select(torch.tensor(keep))
    truth = render_scenes([scene] * len(keep), cameras)
    image = image.cpu().float()
    mask = foreground_mask(image)
    ious = [silhouette_iou(mask, m) for m in truth.mask]
    best = max(range(len(ious)), key=ious.__getitem__)
    # Edge pixels mix the object with the background; every world colour has a channel under 0.25,
    # so pixels 0.5 away from the background are the object's own.
    core = foreground_mask(image, tol=0.5) > 0.5
    nearest = _nearest_object(truth.object_ids[best], len(scene.objects))
    errors = [shading_free_error(image[core & (nearest == k)].mean(0), torch.tensor(COLORS[obj.color]))
              if (core & (nearest == k)).any() else 1.0 for k, obj in enumerate(scene.objects)]
    error = max(errors)
    result = {"iou": float(ious[best]), "colour_error": float(error), "passed": bool(ious[best] >= PASS_IOU and error <= PASS_COLOUR)}
    if camera is not None:
        result["own_iou"] = silhouette_iou(mask, foreground_mask(render_scenes([scene], camera).rgb[0]))
    return result
