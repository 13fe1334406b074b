"""nerfacc's occupancy-grid sampling (CUDA only; `pip install sds3d[cuda]`), for `render.occupancy_grid`.

Rays are marched at a fixed step through the cells the grid marks occupied, so empty space costs no
field queries; samples come packed ([n] with a ray index each), not as [rays, samples]. The grid
follows the field: every training render counts as a step, and ``update_every_n_steps`` re-evaluates
it (all cells during its warm-up, a quarter of them later). Compositing matches ``volume.py``.
"""

import math

import torch

from sds3d.errors import ConfigError
from sds3d.render.shading import light_directions, shade, shade_composited


class OccupancySampler:
    """An ``OccGridEstimator`` over the scene cube with step 2*sqrt(3)*radius / ``samples_per_ray``."""

    def __init__(self, radius: float, samples_per_ray: int, device: torch.device, resolution: int = 128):
        try:
            import nerfacc
        except ImportError as exc:
            raise ConfigError("render.occupancy_grid needs nerfacc, which is not installed",
                              hint="pip install 'sds3d[cuda]' on the CUDA machine, or render.occupancy_grid=false") from exc
        self.nerfacc = nerfacc
        aabb = torch.tensor([-radius] * 3 + [radius] * 3, device=device)
        self.estimator = nerfacc.OccGridEstimator(aabb, resolution=resolution, levels=1).to(device)
        self.step_size = 2.0 * math.sqrt(3.0) * radius / samples_per_ray
        self.renders = 0

    def render_rays(self, field, origins, dirs, light, bg, shading: str, with_normals: bool, shape_only: bool, cfg):
        """The same outputs as ``VolumeRenderer._render_rays``, per ray [N, ...], from packed samples; ``cfg``
        is the render config (light and its strengths)."""
        acc, n = self.nerfacc, origins.shape[0]
        if torch.is_grad_enabled():
            self.estimator.update_every_n_steps(self.renders, lambda x: field.density(x) * self.step_size, occ_thre=0.01)
            self.renders += 1

        def sigma_fn(t_starts, t_ends, rays):
            return field.density(origins[rays] + dirs[rays] * ((t_starts + t_ends) / 2.0)[:, None])

        rays, t_starts, t_ends = self.estimator.sampling(origins, dirs, sigma_fn=sigma_fn, render_step_size=self.step_size,
                                                         stratified=torch.is_grad_enabled())
        depths = (t_starts + t_ends) / 2.0  # [n]
        points = origins[rays] + dirs[rays] * depths[:, None]  # [n, 3]
        need_normals = with_normals or shading != "albedo"
        density, albedo, normals = field.query(points, need_normals)
        weights = acc.render_weight_from_density(t_starts, t_ends, density, ray_indices=rays, n_rays=n)[0]  # [n]

        def composite(values):  # [n, D] -> [N, D]
            return acc.accumulate_along_rays(weights, values, ray_indices=rays, n_rays=n)

        opacity, depth = composite(None), composite(depths[:, None])
        normal = composite(normals) if normals is not None else None
        deferred = cfg.deferred_shading and shading != "albedo"  # an albedo render has no normals to light
        if deferred:
            light_dir = light_directions(cfg, origins + dirs * depth / opacity.clamp(min=1e-6), light, dirs)
        else:
            light_dir = light_directions(cfg, points, light[rays], dirs[rays])

        def image(albedo):
            if deferred:
                lit = shade_composited(composite(albedo), normal, opacity, light_dir, shading, cfg.ambient, cfg.diffuse)
            else:
                lit = composite(shade(albedo, normals, light_dir, shading, cfg.ambient, cfg.diffuse))
            return lit + (1.0 - opacity) * bg

        region_codes = getattr(field, "region_codes", None)
        out = {"rgb": image(albedo), "rgb_shape_only": image(albedo.detach()) if shape_only else None,
               "opacity": opacity, "depth": depth,
               "normal": None, "orient": None,
               "semantic": None if region_codes is None else composite(region_codes(points)).detach()}
        if normals is not None:
            out["normal"] = normal
            facing_away = (normals * dirs[rays]).sum(-1, keepdim=True).clamp(min=0.0) ** 2  # [n, 1]
            out["orient"] = acc.accumulate_along_rays(weights.detach(), facing_away, ray_indices=rays, n_rays=n)
        return out
