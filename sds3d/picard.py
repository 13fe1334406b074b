"""DreamPropeller (Zhou et al., CVPR 2024): Picard iteration over the optimisation path of any run.

A window holds guesses of the parameters before each of the next P steps. P worker processes compute those steps
in full at their guesses (render, objective and regularisers, VSD's LoRA loss included), each step's random draws
keyed by its index (``train.step_seed``) so a step recomputed at a new guess draws the same camera, t and noise.
The run's own process then replays the real optimiser (Adam's state, learning-rate schedule) over the window with
those gradients: from the true parameters it gets the next ones, and the fixed-point error of each step,
e_k = 1e6 ||theta'_{k+1} - theta_{k+1}||^2 / numel, says whether the guess it was computed at held. Steps are kept
up to the first whose error exceeds the threshold (that step's gradient came from a true enough guess, the next
ones not); the replay's later iterates become the next window's guesses, and the threshold follows the errors
(``adapt``). With threshold 0 only exact guesses pass, so the run equals the sequential one step for step.

The parameters are everything the optimiser moves, VSD's LoRA and camera embedding included: the workers compute
the LoRA's gradient at the guessed LoRA as at the guessed field, and the replay applies both, so the LoRA kept is
the one the sequential loop would reach within the threshold. Buffers (occupancy grids) are rebuilt by the replay
itself as the sequential loop rebuilds them.
"""

import copy
import logging
import pickle
import queue
import signal
from typing import Callable, Iterator, List, Tuple

import torch
import torch.multiprocessing as mp
import torch.nn as nn
from omegaconf import OmegaConf

from sds3d.errors import Sds3dError
from sds3d.train import STOP_HINT, Session, StepOutput, apply_gradients, begin_step, build_session, step_gradients

log = logging.getLogger("sds3d")
POLL_SECONDS = 1.0


class WorkerError(Sds3dError):
    """A Picard worker died or failed."""


def trainable(s: Session) -> List[torch.Tensor]:
    return [p for group in s.optimizer.param_groups for p in group["params"]]


def moved(s: Session) -> nn.ModuleDict:
    """What the optimiser moves, as one module: the scene and the objective (VSD's LoRA)."""
    return nn.ModuleDict({"scene": s.scene, "objective": s.objective})


def state_of(s: Session) -> dict:
    """Parameters and buffers of the scene and the objective, on CPU (what a worker loads)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in moved(s).state_dict().items()}


def load_state(s: Session, state: dict) -> None:
    moved(s).load_state_dict(state)


def flat_parameters(s: Session) -> torch.Tensor:
    return torch.cat([p.detach().float().flatten().cpu() for p in trainable(s)])


def _work(cfg_container: dict, device: str, threads: int, jobs, results) -> None:
    """A worker: its own session (guide, scene, objective) from the run's config; for each (step, state) job, the
    step's gradients at that state."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the run's to handle: it closes the workers
    torch.set_num_threads(threads)
    cfg = OmegaConf.create(cfg_container)
    cfg.device = device
    s = build_session(cfg)
    while (job := jobs.get()) is not None:
        step, state, scaler = job
        try:
            load_state(s, state)
            s.scaler.load_state_dict(scaler)  # AMP: the gradients come scaled as the run will unscale them
            out = step_gradients(s, step)
            grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in trainable(s)]
            results.put((step, _detached(out), [g.detach().cpu() for g in grads]))
        except Exception as exc:  # sent to the run, which stops with it
            results.put((step, exc if _picklable(exc) else RuntimeError(repr(exc)), None))


def _picklable(exc: Exception) -> bool:
    try:
        pickle.loads(pickle.dumps(exc))
        return True
    except Exception:  # whatever an exception's own pickling raises
        return False


def _detached(out: StepOutput) -> StepOutput:
    return StepOutput(out.loss.detach().cpu(), {k: v.detach().cpu() for k, v in out.losses.items()}, out.stats,
                      out.grad_norm, out.shading)


class Workers:
    """P processes (torch.multiprocessing, spawned), each computing whole steps for the window."""

    def __init__(self, cfg, count: int):
        ctx = mp.get_context("spawn")
        devices = list(cfg.train.picard.devices) or [cfg.device]
        threads = max(1, torch.get_num_threads() // count)
        container = OmegaConf.to_container(cfg, resolve=True)
        self.results = ctx.Queue()
        self.jobs = [ctx.Queue() for _ in range(count)]
        self.processes = [ctx.Process(target=_work, args=(container, devices[i % len(devices)], threads, self.jobs[i], self.results),
                                      daemon=True, name=f"sds3d-picard-{i}") for i in range(count)]
        for process in self.processes:
            process.start()

    def compute(self, first: int, guesses: List[dict], scaler: dict) -> List[Tuple[StepOutput, List[torch.Tensor]]]:
        """Step ``first + i`` at ``guesses[i]`` on worker i, for every guess, with the run's AMP ``scaler`` state:
        (StepOutput, gradients) in step order."""
        for i, state in enumerate(guesses):
            self.jobs[i].put((first + i, state, scaler))
        done = {}
        while len(done) < len(guesses):
            try:
                step, out, grads = self.results.get(timeout=POLL_SECONDS)
            except queue.Empty:
                self.check_alive()
                continue
            if grads is None:
                raise out if isinstance(out, Sds3dError) else WorkerError(f"a Picard worker failed at step {step}: {out!r}", hint=STOP_HINT)
            done[step] = (out, grads)
        return [done[first + i] for i in range(len(guesses))]

    def check_alive(self) -> None:
        for process in self.processes:
            if not process.is_alive():
                raise WorkerError(f"the Picard worker {process.name} died (exit code {process.exitcode})", hint=STOP_HINT)

    def close(self) -> None:
        for process, jobs in zip(self.processes, self.jobs):
            if process.is_alive():
                jobs.put(None)
        for process in self.processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()


def picard_windows(s: Session, start: int, should_stop: Callable[[], bool]) -> Iterator[List[Tuple[int, StepOutput]]]:
    """The run from ``start`` as Picard windows: each yields its kept steps [(step, output)] in order, after which
    ``s`` holds the true state after the last of them."""
    cfg = s.cfg.train
    total, window, threshold = cfg.steps, cfg.picard.window, cfg.picard.threshold
    workers = Workers(s.cfg, window)
    base, guesses, windows = start, [], 0
    try:
        while base < total:
            if should_stop():
                raise KeyboardInterrupt
            size = min(window, total - base)
            guesses = guesses[:size] + [guesses[-1] if guesses else state_of(s)] * (size - len(guesses))
            computed = workers.compute(base, guesses, s.scaler.state_dict())
            kept, guesses, errors = replay(s, base, computed, guesses, threshold)
            if errors and cfg.picard.adapt > 0:
                threshold = (1 - cfg.picard.adapt) * threshold + cfg.picard.adapt * float(torch.tensor(errors).median())
            base, windows = base + len(kept), windows + 1
            yield kept
    finally:
        workers.close()
        if windows:
            log.info("picard: %d steps in %d windows of %d (%.2f kept per window), threshold at the end %.3g",
                     base - start, windows, window, (base - start) / windows, threshold)


def replay(s: Session, base: int, computed: list, guesses: List[dict], threshold: float):
    """The optimiser replayed over the window from the true state at ``base``: the kept steps, the next window's
    guesses (the replay's iterates from the first unkept step on) and the window's fixed-point errors. ``s`` ends
    at the true state after the kept steps (also when interrupted)."""
    start, names = _snapshot(s), _trainable_names(s)
    kept, errors, settled, iterates = [], [], None, []
    try:
        for i, (out, grads) in enumerate(computed):
            step = base + i
            begin_step(s, step)  # the fields move to the step as the sequential loop moves them
            for p, g in zip(trainable(s), grads):
                p.grad = g.to(p.device, p.dtype)
            out.grad_norm = apply_gradients(s, step)
            if settled is None:
                kept.append((step, out))
            nxt = flat_parameters(s)
            if i + 1 < len(computed):
                guess = torch.cat([guesses[i + 1][name].float().flatten() for name in names])
                errors.append(1e6 * float(((nxt - guess) ** 2).mean()))
                if settled is None and errors[-1] > threshold:
                    settled = _snapshot(s)
            if settled is not None:
                iterates.append(state_of(s))
        if settled is not None:
            _restore(s, *settled)
    except BaseException:
        _restore(s, *start)
        raise
    return kept, iterates, errors


def _trainable_names(s: Session) -> List[str]:
    by_id = {id(p): name for name, p in moved(s).named_parameters()}
    return [by_id[id(p)] for p in trainable(s)]


def _snapshot(s: Session) -> tuple:
    return state_of(s), copy.deepcopy(s.optimizer.state_dict()), s.scaler.state_dict()


def _restore(s: Session, state: dict, optimizer: dict, scaler: dict) -> None:
    load_state(s, state)
    s.optimizer.load_state_dict(optimizer)
    s.scaler.load_state_dict(scaler)
