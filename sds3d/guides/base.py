"""The Guide protocol: a frozen diffusion model seen as a noise-prediction service."""

from typing import List, Protocol

import torch


class Guide(Protocol):
    """What objectives may ask of a diffusion model.

    ``alphas_cumprod`` [T] float32 on the guide's device; ``resolution`` is the square image size the
    model works at (from the model's own config). Every prediction runs under no_grad.
    """

    alphas_cumprod: torch.Tensor
    resolution: int
    device: torch.device

    def encode(self, rgb: torch.Tensor) -> torch.Tensor:
        """rgb [B, 3, H, W] in [0, 1] -> x, the model's input space (differentiable)."""

    def embed(self, prompts: List[str]) -> torch.Tensor:
        """Text embeddings [P, L, D] (float32, on the guide's device), cached on disk."""

    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """x_t [B, ...], t [B] (long), embeddings [C, B, L, D] -> eps [C, B, ...] in one model call."""
