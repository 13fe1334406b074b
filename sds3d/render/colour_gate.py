"""Colour from lightly noised renders only.

On the bundled prior the SDS gradient of a strongly noised render (t above about 0.6 T) asks for paler
colours even at the true asset, while lightly noised ones ask for the true colour: letting only the
latter reach the albedo fixes the colour without losing the shape that high t teaches. The objective
picks its timesteps after the render, so the gate is a hook read at backward time, set once t is known.
"""

from typing import Optional, Tuple

import torch

from sds3d.errors import ConfigError


def gate_colour(rgb: torch.Tensor, rgb_shape_only: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(image, gate): ``image`` [B, H, W, 3] has rgb's value; the part of its gradient that reaches the albedo
    is scaled per item by ``gate`` [B] (ones until changed in place before backward), the geometry's part is not."""
    gate = torch.ones(rgb.shape[0], device=rgb.device, dtype=rgb.dtype)
    colour = rgb - rgb_shape_only  # zero-valued; only the albedo path runs through it
    if colour.requires_grad:
        colour.register_hook(lambda grad: grad * gate.view(-1, 1, 1, 1))
    return rgb_shape_only + colour, gate


def colour_passes(t: Optional[torch.Tensor], t_max: float, num_timesteps: int) -> torch.Tensor:
    """1.0 for the items whose timestep t [B] is at or below ``t_max`` (a fraction of T), else 0.0."""
    if t is None:
        raise ConfigError("the objective reports no timesteps, which objective.colour_t_max needs",
                          hint="objective.colour_t_max=1.0 lets every render teach colour")
    return (t <= t_max * num_timesteps).float()
