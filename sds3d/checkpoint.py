"""Checkpoints: everything needed to continue a run exactly (scene, optimiser, objective state,
AMP scaler, step, every RNG), written atomically so a killed run keeps its last good one."""

import random
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from sds3d.atomic import atomic_write
from sds3d.errors import CheckpointError


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


def save_checkpoint(path: Path, step: int, scene, optimizer=None, objective=None, scaler=None,
                    identity: Optional[dict] = None) -> None:
    """``step`` is the number of completed optimisation steps; ``identity`` names what the state belongs
    to (``run_identity``), checked when a run resumes."""
    payload = {
        "step": step,
        "identity": identity,
        "scene": scene.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "objective": objective.state_dict() if objective is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng_state(),
    }
    with atomic_write(path) as tmp:
        torch.save(payload, tmp)


def run_identity(cfg) -> dict:
    """The config values a checkpoint's state depends on: resuming under others cannot continue it."""
    return {"objective.name": cfg.objective.name, "guide.model": cfg.guide.model, "scene.particles": cfg.scene.particles}


def read_checkpoint(path: Path) -> dict:
    """The checkpoint's payload; a missing, truncated or corrupt file is a CheckpointError naming it."""
    if not Path(path).is_file():
        raise CheckpointError(f"no checkpoint at '{path}'", hint="the run folder has no ckpt/last.pt yet; start a new run")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for a damaged file
        raise CheckpointError(f"cannot read the checkpoint '{path}': {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                              hint="the file is truncated or corrupt (a disk full or a copy cut short?); start a new run") from exc
    if not isinstance(payload, dict) or "scene" not in payload or "step" not in payload:
        raise CheckpointError(f"'{path}' is not an sds3d checkpoint", hint="start a new run")
    return payload


def load_checkpoint(path: Path, scene, optimizer=None, objective=None, scaler=None, restore_rng: bool = True,
                    identity: Optional[dict] = None) -> int:
    """Loads what is given into place and returns the completed step count. With ``identity`` (the
    resuming run's ``run_identity``), a checkpoint saved under other values is refused."""
    payload = read_checkpoint(path)
    saved = payload.get("identity")
    if identity is not None and saved is not None and saved != identity:
        changed = ", ".join(f"{k}: {saved.get(k)} -> {identity.get(k)}" for k in identity if saved.get(k) != identity.get(k))
        raise CheckpointError(f"the run's config changed since '{path}' was saved ({changed}): it cannot resume",
                              hint="put the old values back in config.yaml, or start a new run with the new ones")
    try:
        scene.load_state_dict(payload["scene"])
        for target, key in ((optimizer, "optimizer"), (objective, "objective"), (scaler, "scaler")):
            state: Optional[dict] = payload.get(key)
            if target is not None and state:
                target.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"'{path}' does not fit the run's config: {str(exc).splitlines()[0]}",
                              hint="config.yaml was edited after the checkpoint was saved; put it back or start a new run") from exc
    if restore_rng:
        set_rng_state(payload["rng"])
    return payload["step"]
