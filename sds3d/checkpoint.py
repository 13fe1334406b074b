"""Checkpoints: everything needed to continue a run exactly (scene, optimiser, objective state,
AMP scaler, step, every RNG), written atomically so a killed run keeps its last good one."""

import random
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from sds3d.atomic import atomic_write
from sds3d.errors import ConfigError


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, step: int, scene, optimizer=None, objective=None, scaler=None) -> None:
    """``step`` is the number of completed optimisation steps."""
    payload = {
        "step": step,
        "scene": scene.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "objective": objective.state_dict() if objective is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng_state(),
    }
    with atomic_write(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path, scene, optimizer=None, objective=None, scaler=None, restore_rng: bool = True) -> int:
    """Loads what is given into place and returns the completed step count."""
    if not Path(path).is_file():
        raise ConfigError(f"no checkpoint at '{path}'", hint="the run folder has no ckpt/last.pt yet; start a new run")
    payload = torch.load(path, map_location="cpu", weights_only=False)
    scene.load_state_dict(payload["scene"])
    for target, key in ((optimizer, "optimizer"), (objective, "objective"), (scaler, "scaler")):
        state: Optional[dict] = payload.get(key)
        if target is not None and state:
            target.load_state_dict(state)
    if restore_rng:
        set_rng_state(payload["rng"])
    return payload["step"]
