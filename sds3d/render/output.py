"""What every renderer returns (the volume renderer, the nerfacc path and the mesh rasterizer alike)."""

from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class RenderOutput:
    rgb: torch.Tensor  # [B, H, W, 3] in [0, 1], background composited
    opacity: torch.Tensor  # [B, H, W, 1]
    depth: torch.Tensor  # [B, H, W, 1]
    normal: Optional[torch.Tensor] = None  # [B, H, W, 3] world-space, weighted by opacity
    orient: Optional[torch.Tensor] = None  # [B, H, W, 1] DreamFusion orientation penalty per pixel
    semantic: Optional[torch.Tensor] = None  # [B, H, W, K] region codes, where the scene has them
    # rgb's value with the albedo cut from the graph, so that only the geometry gets its gradient (when asked)
    rgb_shape_only: Optional[torch.Tensor] = None  # [B, H, W, 3]
