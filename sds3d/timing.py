"""Wall time by part: ``with timer("render"):`` adds the part's seconds, synchronised on CUDA so that
queued kernels count where they were launched. Used by `sds3d bench speed` per step and by a run per phase."""

import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Dict

import torch


class PartTimer:
    """``with timer(part):`` adds the part's wall time (synchronised on CUDA) to ``seconds[part]``."""

    def __init__(self, device: torch.device = torch.device("cpu")):
        self.device = device
        self.seconds: Dict[str, float] = defaultdict(float)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def __call__(self, part: str):
        self.sync()
        began = time.perf_counter()
        try:
            yield
        finally:
            self.sync()
            self.seconds[part] += time.perf_counter() - began
