"""Latent renders for a warm-up phase (Latent-NeRF): the render mapped straight into a latent guide's
input space, skipping the VAE encoder (on SD at 512 px, as costly as the UNet call itself).

The map is a learned per-pixel linear one, rgb -> 4 latent channels, applied after compositing. A
linear map commutes with alpha compositing (the weights and the background's share sum to one), so
this is the field rendering 4 latent channels of its own, tied to its albedo: the colours the
warm-up learns carry over when the VAE takes over.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

# rgb in [-1, 1] ~= (scaled SD 1.x/2.x latent) @ LATENT_TO_RGB: the VAE's well-known linear approximation.
LATENT_TO_RGB = torch.tensor([
    [0.298, 0.207, 0.208],
    [0.187, 0.286, 0.173],
    [-0.158, 0.189, 0.264],
    [-0.184, -0.271, -0.473],
])


class LatentHead(nn.Module):
    """rgb [B, 3, H, W] in [0, 1] -> latents [B, 4, size, size]; starts at the pseudo-inverse of LATENT_TO_RGB."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 4)
        with torch.no_grad():
            self.linear.weight.copy_(torch.linalg.pinv(LATENT_TO_RGB).T)  # [4, 3]
            self.linear.bias.zero_()

    def forward(self, rgb: torch.Tensor, size: int) -> torch.Tensor:
        rgb = F.interpolate(rgb, (size, size), mode="bilinear", align_corners=False, antialias=True)
        latents = self.linear((rgb * 2.0 - 1.0).permute(0, 2, 3, 1))  # [B, size, size, 4]
        return latents.permute(0, 3, 1, 2)
