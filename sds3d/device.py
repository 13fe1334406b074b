"""Which torch device a run uses: ``device: auto`` takes CUDA when there is one."""

import torch


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
