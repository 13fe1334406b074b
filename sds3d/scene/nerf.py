"""The optimised scene of the NeRF stage: a hash-grid field of density and albedo, with normals."""

from typing import Callable, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from sds3d.scene.hashgrid import HashGridEncoding, active_levels_at
from sds3d.scene.occupancy import OccupancyGrid


def mlp(in_dim: int, out_dim: int, width: int, hidden_layers: int) -> nn.Sequential:
    dims = [in_dim] + [width] * hidden_layers
    layers = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.Linear(dims[-1], out_dim))


def code_inputs(region_codes: Optional[Callable[[torch.Tensor], torch.Tensor]]) -> int:
    """How many inputs the region codes add to a network (0 without them)."""
    return region_codes(torch.zeros(1, 3)).shape[-1] if region_codes is not None else 0


class ConstantCode(nn.Module):
    """The same code [C] at every point: an amortized generator's prompt code, fixed for one prompt."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("code", torch.zeros(dim))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.code.expand(len(points), -1)


def with_codes(features: torch.Tensor, region_codes, points: torch.Tensor) -> torch.Tensor:
    """``features`` [N, F] with the points' region codes appended, or as they are without codes."""
    if region_codes is None:
        return features
    return torch.cat([features, region_codes(points).to(features.dtype)], dim=-1)


class NeRFField(nn.Module):
    """Density and albedo at points of the cube [-radius, radius]^3.

    density = softplus(raw - 1 + bias(x)); with the Magic3D blob, bias = scale * (1 - |x| / std), so a
    fresh field is a soft ball at the origin that SDS then sculpts. albedo = sigmoid(raw).
    ``region_codes`` (a layout's, points [N, 3] -> [N, K]) gives every point the code of its region,
    which the renderer composites into a semantic map. ``support`` (points [N, 3] -> bool [N], the layout's
    object boxes under ``layout.separate_objects``) makes each region an object of its own: density only
    inside it, and the region code an input of the network beside the encoding. ``input_codes`` (points [N, 3] ->
    [N, C], a module such as ``ConstantCode``) are network inputs of another kind: an amortized generator's prompt
    code (``sds3d.amortize``). With ``occupancy.resolution`` > 0 the field keeps
    an occupancy grid, and ``occupied(points) -> bool [N]`` tells the renderer which samples it may skip.
    """

    def __init__(self, cfg, region_codes: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                 support: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                 input_codes: Optional[Callable[[torch.Tensor], torch.Tensor]] = None):
        super().__init__()
        self.cfg = cfg
        self.region_codes, self.support, self.separate = region_codes, support, support is not None
        self.input_codes = region_codes if self.separate else input_codes  # what the network reads beside the encoding
        self.encoding = HashGridEncoding.from_config(cfg.encoding)
        self.network = mlp(self.encoding.n_output_dims + code_inputs(self.input_codes), 4, cfg.mlp_width, cfg.mlp_layers)
        grid = cfg.occupancy
        self.occupancy = OccupancyGrid(cfg.radius, grid.resolution, grid.every, grid.threshold) if grid.resolution > 0 else None
        self.occupied = self.occupancy.occupied if self.occupancy is not None else None

    def update_step(self, step: int) -> None:
        enc = self.cfg.encoding
        self.encoding.set_active_levels(active_levels_at(step, enc.levels, enc.start_level, enc.start_step, enc.update_steps))
        if self.occupancy is not None:
            self.occupancy.update(step, self.density)

    def density_bias(self, points: torch.Tensor) -> torch.Tensor:
        if self.cfg.density_bias == "none":
            return torch.zeros_like(points[..., 0])
        return self.cfg.blob_scale * (1.0 - points.norm(dim=-1) / self.cfg.blob_std)

    def forward(self, points: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """points [N, 3] -> density [N], albedo [N, 3]."""
        unit = (points / self.cfg.radius + 1.0) / 2.0  # [N, 3] in [0, 1]
        features = with_codes(self.encoding(unit), self.input_codes, points)
        raw = self.network(features).float()  # [N, 4]
        density = F.softplus(raw[:, 0] - 1.0 + self.density_bias(points))
        if self.separate:
            density = density * self.support(points)
        return density, torch.sigmoid(raw[:, 1:])

    def density(self, points: torch.Tensor) -> torch.Tensor:
        return self(points)[0]

    def query(self, points: torch.Tensor, with_normals: bool) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """density [N], albedo [N, 3] and, if asked, outward unit normals [N, 3] (minus the density gradient)."""
        if with_normals and self.cfg.normals == "analytic":
            return self._with_analytic_normals(points)
        density, albedo = self(points)
        return density, albedo, self.normals(points, density) if with_normals else None

    def normals(self, points: torch.Tensor, density: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Outward unit normals [N, 3] at ``points``; ``density`` [N] is the field's own density there, which
        forward differences reuse (computed when not given)."""
        if self.cfg.normals == "analytic":
            return self._with_analytic_normals(points)[2]
        eps = self.cfg.finite_difference_eps
        offsets = torch.eye(3, device=points.device) * eps  # [3, 3]
        if self.cfg.normals == "finite_difference":
            shifted = torch.cat([points[:, None] + offsets, points[:, None] - offsets], dim=1)  # [N, 6, 3]
            sides = self.density(shifted.reshape(-1, 3)).reshape(-1, 6)
            grad = (sides[:, :3] - sides[:, 3:]) / (2 * eps)
        else:  # forward_difference: three queries instead of six
            centre = self.density(points) if density is None else density
            ahead = self.density((points[:, None] + offsets).reshape(-1, 3)).reshape(-1, 3)
            grad = (ahead - centre[:, None]) / eps
        return F.normalize(-grad, dim=-1)

    def _with_analytic_normals(self, points: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        keep_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            points = points.detach().requires_grad_(True)
            density, albedo = self(points)
            (grad,) = torch.autograd.grad(density.sum(), points, create_graph=keep_graph)
        normals = F.normalize(-grad, dim=-1)
        if not keep_graph:
            density, albedo, normals = density.detach(), albedo.detach(), normals.detach()
        return density, albedo, normals
