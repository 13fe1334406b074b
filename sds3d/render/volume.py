"""Volume rendering of a density/albedo field, in plain torch (CPU and GPU).

Per ray: stratified samples between the ray's entry and exit of the scene cube, a no-grad coarse
pass whose weights place ``importance_samples`` more samples where the surface is, then one
differentiable pass over all samples. A field with an ``occupied(points) -> bool [N]`` attribute (not
None) is queried only at the samples it marks (empty-space skipping). The field arrives as an object with
``query(points, with_normals) -> (density, albedo, normals)`` and ``normals(points, density) -> normals``, so
this module never imports the scene; a field with a ``region_codes(points) -> [N, K]`` attribute (not None)
also gets its codes composited into ``semantic``.
With ``occupancy_grid`` and rays on CUDA, nerfacc's occupancy grid samples them instead (``occupancy.py``).
"""

import logging
from typing import Optional

import torch

from sds3d.render.occupancy import OccupancySampler
from sds3d.render.output import RenderOutput
from sds3d.render.shading import light_directions, shade, shade_composited

log = logging.getLogger("sds3d")


def ray_box_bounds(origins: torch.Tensor, dirs: torch.Tensor, radius: float):
    """Entry and exit distances [N] of rays with the cube [-radius, radius]^3; a miss gives near == far."""
    safe = torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
    t0, t1 = (-radius - origins) / safe, (radius - origins) / safe
    near = torch.minimum(t0, t1).amax(-1).clamp(min=0.0)
    far = torch.maximum(t0, t1).amin(-1)
    return near, torch.maximum(far, near)


def stratified_depths(near, far, count: int, jitter: bool) -> torch.Tensor:
    """[N, count] depths, one per equal bin of [near, far], uniform within its bin when ``jitter``."""
    shape = (near.shape[0], count)
    offsets = torch.rand(shape, device=near.device) if jitter else torch.full(shape, 0.5, device=near.device)
    bins = (torch.arange(count, device=near.device) + offsets) / count  # [N, count]
    return near[:, None] + (far - near)[:, None] * bins


def weights_from_density(density: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """w_i = T_i * (1 - exp(-sigma_i * delta_i)), T_i = prod_{j<i} exp(-sigma_j * delta_j); [N, S] -> [N, S].

    A ray through 10 samples of density 1 spaced 0.1 apart has opacity sum(w) = 1 - e^-1 = 0.632.
    """
    tau = density * deltas
    alpha = 1.0 - torch.exp(-tau)
    transmittance = torch.exp(-torch.cumsum(torch.cat([torch.zeros_like(tau[:, :1]), tau[:, :-1]], dim=-1), dim=-1))
    return alpha * transmittance


def sample_pdf(depths: torch.Tensor, weights: torch.Tensor, count: int, jitter: bool) -> torch.Tensor:
    """Inverse-CDF samples [N, count] of the piecewise-constant pdf ``weights`` over the midpoints of ``depths``."""
    mids = 0.5 * (depths[:, 1:] + depths[:, :-1])  # [N, S-1]
    pdf = weights[:, 1:-1] + 1e-5
    cdf = torch.cumsum(pdf / pdf.sum(-1, keepdim=True), dim=-1)
    cdf = torch.cat([torch.zeros_like(cdf[:, :1]), cdf], dim=-1)  # [N, S-1]
    if jitter:
        u = torch.rand(depths.shape[0], count, device=depths.device)
    else:
        u = torch.linspace(0.0, 1.0, count, device=depths.device).expand(depths.shape[0], count)
    idx = torch.searchsorted(cdf, u.contiguous(), right=True).clamp(1, mids.shape[1] - 1)
    cdf_lo, cdf_hi = cdf.gather(1, idx - 1), cdf.gather(1, idx)
    lo, hi = mids.gather(1, idx - 1), mids.gather(1, idx)
    frac = ((u - cdf_lo) / (cdf_hi - cdf_lo).clamp(min=1e-8)).clamp(0.0, 1.0)
    return lo + frac * (hi - lo)


class VolumeRenderer:
    """Renders ``field`` (see module doc) and a background module from a batch of cameras."""

    def __init__(self, cfg, radius: float, occupancy_grid: bool = False):
        self.cfg = cfg
        self.radius = radius
        self.occupancy_grid = occupancy_grid
        self._samplers = {}  # device type -> OccupancySampler or None (dense), chosen on the first render there

    def render(self, field, background, cameras, shading: str = "albedo", with_normals: bool = False,
               background_color: Optional[torch.Tensor] = None, shape_only: bool = False) -> RenderOutput:
        """``background_color`` [B, 3] replaces the background module (random-colour augmentation);
        ``shape_only`` also renders ``rgb_shape_only``."""
        origins, dirs = cameras.rays()  # [B, H, W, 3]
        batch, height, width = origins.shape[:3]
        light = cameras.light_position[:, None, None, :].expand_as(origins)
        if background_color is None:
            bg = background(dirs)
        else:
            bg = background_color.to(dirs.device)[:, None, None, :].expand_as(dirs)
        rays = [t.reshape(-1, 3) for t in (origins, dirs, light, bg)]
        chunks = [
            self._render_rays(field, *(r[i : i + self.cfg.chunk] for r in rays), shading, with_normals, shape_only)
            for i in range(0, rays[0].shape[0], self.cfg.chunk)
        ]
        merged = {k: torch.cat([c[k] for c in chunks]) if chunks[0][k] is not None else None for k in chunks[0]}
        shaped = {k: v.reshape(batch, height, width, -1) if v is not None else None for k, v in merged.items()}
        return RenderOutput(**shaped)

    def _sample_points(self, field, origins, dirs):
        """Sorted depths [N, S] with S = samples + importance_samples, and the far bound [N]."""
        near, far = ray_box_bounds(origins, dirs, self.radius)
        jitter = torch.is_grad_enabled()
        depths = stratified_depths(near, far, self.cfg.samples, jitter)
        if self.cfg.importance_samples > 0:
            with torch.no_grad():
                coarse = self._weights(self._query(field, (origins[:, None] + dirs[:, None] * depths[..., None]).reshape(-1, 3))[0],
                                       depths, far)
                fine = sample_pdf(depths, coarse, self.cfg.importance_samples, jitter)
            depths, _ = torch.sort(torch.cat([depths, fine], dim=-1), dim=-1)
        return depths, far

    @staticmethod
    def _query(field, points):
        """density [N], albedo [N, 3], querying the field only where its ``occupied`` (if any) says a sample
        can have density: elsewhere density and albedo are 0."""
        occupied = getattr(field, "occupied", None)
        if occupied is None:
            return field.query(points, False)[:2]
        keep = occupied(points).nonzero()[:, 0]
        density, albedo, _ = field.query(points[keep], False)
        return (torch.zeros(points.shape[0], dtype=density.dtype, device=points.device).index_put((keep,), density),
                torch.zeros(points.shape[0], 3, dtype=albedo.dtype, device=points.device).index_put((keep,), albedo))

    @staticmethod
    def _weights(density, depths, far):
        deltas = torch.diff(torch.cat([depths, far[:, None]], dim=-1), dim=-1)  # [N, S]
        return weights_from_density(density.reshape(depths.shape), deltas)

    @staticmethod
    def _visible_normals(field, points, density, weights):
        """Normals [N*S, 3] of the samples that can show in a picture (weight above 1e-5), zero elsewhere.

        A pixel's error is under 48 * 1e-5, far below one 8-bit level, and the gradient through a skipped
        normal is as small; most samples are empty space, so this skips most of the normals' field queries
        (differentiable ones too, in training renders).
        """
        visible = weights.detach().reshape(-1) > 1e-5
        normals = field.normals(points[visible], density[visible])
        return torch.zeros_like(points, dtype=normals.dtype).index_put((visible.nonzero()[:, 0],), normals)

    def _occupancy_sampler(self, device: torch.device):
        """nerfacc's sampler where ``occupancy_grid`` is set and the rays are on CUDA, else None; logs the choice."""
        if device.type not in self._samplers:
            use = self.occupancy_grid and device.type == "cuda"
            sampler = OccupancySampler(self.radius, self.cfg.samples + self.cfg.importance_samples, device) if use else None
            why = "render.occupancy_grid on cuda" if use else ("it needs cuda" if self.occupancy_grid else "render.occupancy_grid=false")
            log.info("renderer: %s (%s)", "nerfacc occupancy grid" if use else "dense torch sampler", why)
            self._samplers[device.type] = sampler
        return self._samplers[device.type]

    def _render_rays(self, field, origins, dirs, light, bg, shading: str, with_normals: bool, shape_only: bool):
        sampler = self._occupancy_sampler(origins.device)
        if sampler is not None:
            return sampler.render_rays(field, origins, dirs, light, bg, shading, with_normals, shape_only, self.cfg)
        depths, far = self._sample_points(field, origins, dirs)
        n, s = depths.shape
        points = (origins[:, None] + dirs[:, None] * depths[..., None]).reshape(-1, 3)  # [N*S, 3]
        need_normals = with_normals or shading != "albedo"
        density, albedo = self._query(field, points)
        weights = self._weights(density, depths, far)  # [N, S]
        normals = self._visible_normals(field, points, density, weights) if need_normals else None
        opacity = weights.sum(-1, keepdim=True)
        depth = (weights * depths).sum(-1, keepdim=True)

        def composite(values):  # [N*S, D] -> [N, D]
            return (weights[..., None] * values.reshape(n, s, -1)).sum(1)

        normal = composite(normals) if normals is not None else None
        deferred = self.cfg.deferred_shading and shading != "albedo"  # an albedo render has no normals to light
        if deferred:
            light_dir = light_directions(self.cfg, origins + dirs * depth / opacity.clamp(min=1e-6), light, dirs)
        else:
            light_dir = light_directions(self.cfg, points, light[:, None].expand(n, s, 3).reshape(-1, 3),
                                         dirs[:, None].expand(n, s, 3).reshape(-1, 3))

        def image(albedo):
            if deferred:
                lit = shade_composited(composite(albedo), normal, opacity, light_dir, shading, self.cfg.ambient, self.cfg.diffuse)
            else:
                lit = composite(shade(albedo, normals, light_dir, shading, self.cfg.ambient, self.cfg.diffuse))
            return lit + (1.0 - opacity) * bg

        region_codes = getattr(field, "region_codes", None)
        out = {
            "rgb": image(albedo),
            "rgb_shape_only": image(albedo.detach()) if shape_only else None,
            "opacity": opacity,
            "depth": depth,
            "normal": None,
            "orient": None,
            # Codes only feed masks (no gradient), so the weights are detached.
            "semantic": None if region_codes is None else (weights.detach()[..., None] * region_codes(points).reshape(n, s, -1)).sum(1),
        }
        if normals is not None:
            out["normal"] = normal
            normals = normals.reshape(n, s, 3)
            facing_away = (normals * dirs[:, None]).sum(-1).clamp(min=0.0) ** 2  # [N, S]
            out["orient"] = (weights.detach() * facing_away).sum(-1, keepdim=True)
        return out
