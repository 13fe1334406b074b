"""What rays that leave the scene see: a solid colour or a small learned environment MLP."""

import torch
import torch.nn as nn

from sds3d.scene.nerf import mlp


class Background(nn.Module):
    """Colour [.., 3] in [0, 1] for unit view directions [.., 3].

    ``environment`` is an MLP of sin/cos features of the direction; ``solid`` is a fixed colour.
    """

    def __init__(self, cfg):
        super().__init__()
        self.kind = cfg.kind
        self.frequencies = cfg.frequencies
        self.register_buffer("color", torch.tensor(list(cfg.color), dtype=torch.float32))
        if self.kind == "environment":
            self.network = mlp(3 + 6 * cfg.frequencies, 3, cfg.mlp_width, 2)

    def forward(self, dirs: torch.Tensor) -> torch.Tensor:
        if self.kind == "solid":
            return self.color.expand(*dirs.shape[:-1], 3)
        scales = 2.0 ** torch.arange(self.frequencies, device=dirs.device, dtype=dirs.dtype)  # [F]
        angles = (dirs[..., None, :] * scales[:, None]).flatten(-2)  # [.., 3F]
        features = torch.cat([dirs, torch.sin(angles), torch.cos(angles)], dim=-1)
        return torch.sigmoid(self.network(features)).float()
