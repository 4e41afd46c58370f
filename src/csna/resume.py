"""Interrupting and resuming a run: the furthest saved training state, SIGINT/SIGTERM while
training, and the test-only fault injection.

A run killed at any point (SIGKILL included) continues with ``csna train --resume RUN_DIR``
from ``latest.pt`` or the last phase checkpoint and ends where an uninterrupted run ends.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import signal
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from . import checkpoint as ckpt
from .config import Config
from .phases import PHASES


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped training after the latest state was saved."""

    def __init__(self, signum: int, phase: int, step: int, run_dir: Path | None):
        super().__init__(signum, phase, step, run_dir)
        self.signum, self.phase, self.step, self.run_dir = signum, phase, step, run_dir

    def __str__(self) -> str:
        name = signal.Signals(self.signum).name
        where = f"phase {self.phase}" + (f", step {self.step}" if self.step else "")
        if self.run_dir is None:
            return f"interrupted by {name} in {where}"
        return (f"interrupted by {name} in {where}; the training state is saved in "
                f"{self.run_dir / ckpt.LATEST}: continue with `csna train --resume {self.run_dir}`")


def completed_phases(run_dir: Path) -> list[int]:
    return [n for n, ph in PHASES.items() if (run_dir / ph.checkpoint).is_file()]


def resume_state(run_dir: Path, device: torch.device) -> dict[str, Any] | None:
    """The furthest saved training state of a run: ``latest.pt`` or the last phase
    checkpoint, whichever is further on (a kill between the two writes leaves either)."""
    found: list[dict[str, Any]] = []
    done = completed_phases(run_dir)
    if done:
        st = ckpt.load(run_dir / PHASES[max(done)].checkpoint, map_location=device)
        st.update(kind="phase", done=True, phase=max(done), file=PHASES[max(done)].checkpoint)
        if not st.get("results"):  # a checkpoint written without resume information
            st["results"] = {}
        found.append(st)
    if (run_dir / ckpt.LATEST).is_file():
        st = ckpt.load(run_dir / ckpt.LATEST, map_location=device)
        st["file"] = ckpt.LATEST
        found.append(st)
    if not found:
        return None
    return max(found, key=lambda s: (int(s["phase"]), bool(s.get("done")), int(s.get("global_step", 0))))


def config_difference(saved: dict[str, Any], cfg: Config, section: str) -> str | None:
    now = cfg.to_dict()[section]
    for key, value in (saved.get(section) or {}).items():
        if now.get(key) != value:
            return f"{section}.{key}={value!r} (the config now says {now.get(key)!r})"
    return None


def check_resumable(state: dict[str, Any], cfg: Config, feature_names: list[str], rd: Path) -> None:
    where = rd / state["file"]
    diff = config_difference(state.get("config") or {}, cfg, "model")
    if diff:
        raise ckpt.CheckpointError(f"{where} does not match the architecture: it was trained with {diff}")
    features = (state.get("meta") or {}).get("features")
    if features is not None and list(features) != list(feature_names):
        extra = sorted(set(feature_names) - set(features))
        lost = sorted(set(features) - set(feature_names))
        raise ckpt.CheckpointError(f"{where} does not match the data: features differ "
                                   f"(new: {extra[:5]}, missing: {lost[:5]})")


@contextlib.contextmanager
def signals_saved(trainer: Any) -> Iterator[None]:
    """While training into a run directory, SIGINT/SIGTERM only set a flag; the step loop
    then saves the latest state and raises ``TrainingInterrupted``."""
    if trainer.run_dir is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        trainer.signal_received = signum

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def test_hook() -> Callable[[int, int | str], None]:
    """Test-only fault injection: ``CSNA_TEST_KILL_AT="PHASE:STEP[:SIGNAL]"`` sends SIGNAL
    (default SIGKILL) to this process after step STEP of phase PHASE (``end``: right after
    the phase checkpoint is written). Unset, it does nothing."""
    spec = os.environ.get("CSNA_TEST_KILL_AT", "")
    if not spec:
        return lambda phase, step: None
    parts = spec.split(":")
    phase, at = int(parts[0]), parts[1]
    sig = getattr(signal, "SIG" + parts[2].upper().removeprefix("SIG")) if len(parts) > 2 else signal.SIGKILL
    fired = []

    def hook(n: int, step: int | str) -> None:
        if not fired and n == phase and str(step) == at:
            fired.append(True)
            os.kill(os.getpid(), sig)

    return hook


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. too many non-finite batches in a row); the last good
    checkpoint is kept."""


# ------------------------------------------------------------ the trainer's saved state
def training_state(trainer: Any, n: int, st: dict[str, Any] | None, objects: dict[str, Any] | None = None,
                   done: bool = False) -> dict[str, Any]:
    """Everything needed to continue phase ``n`` exactly where it is: the progress ``st``
    (position in the data, best-validation state, history), the optimizer, the gate-noise
    generator, every RNG state and the model. The learning rate is a pure function of the
    step and the progress (``phases.learning_rate``), so it needs no state of its own."""
    objects = objects or {}
    gen = objects.get("generator")
    return {
        "format": ckpt.FORMAT,
        "kind": "latest",
        "phase": n,
        "done": done,
        "global_step": trainer.global_step,
        "results": {k: dataclasses.asdict(v) for k, v in trainer.results.items()},
        "progress": st,
        "optimizer": objects["optimizer"].state_dict() if objects.get("optimizer") else None,
        "generator_state": gen.get_state() if gen is not None else None,
        "rng": ckpt.rng_state(),
        "model_state": trainer.model.state_dict(),
        "config": trainer.cfg.to_dict(),
        "meta": trainer.meta,
    }


def restore_progress(state: dict[str, Any], objects: dict[str, Any], where: Path | None, n: int
                     ) -> dict[str, Any]:
    """Restore the optimizer, the generator and every RNG from a saved mid-phase ``state`` in
    place; returns the phase's progress.

    Raises:
        CheckpointError: the state does not fit this config (naming the file and phase).
    """
    try:
        opt = objects.get("optimizer")
        if opt is not None and state.get("optimizer") is not None:
            opt.load_state_dict(state["optimizer"])
        if objects.get("generator") is not None and state.get("generator_state") is not None:
            objects["generator"].set_state(state["generator_state"].cpu())  # map_location may have moved it
        ckpt.set_rng_state(state["rng"])
        return dict(state["progress"])
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ckpt.CheckpointError(f"{where} does not match this config (phase {n}): {first[:200]}") from None


def phase_checkpoint(trainer: Any, n: int) -> dict[str, Any]:
    """The checkpoint written at the end of phase ``n`` (design §5): the full model state, the
    modules the phase trained, its result; also a resume point (the next phase reseeds every
    RNG)."""
    ph = PHASES[n]
    res = trainer.results.get(n)
    finetuned = n == 4 and trainer.cfg.phase4.finetune_backbone
    return {
        "format": ckpt.FORMAT,
        "phase": n,
        "phase_name": ph.name,
        "trained_modules": list(ph.trains) + (list(PHASES[3].trains) if finetuned else []),
        "model_state": copy.copy(trainer.model.state_dict()),
        "config": trainer.cfg.to_dict(),
        "meta": trainer.meta,
        "result": {"epochs": res.epochs, "steps": res.steps, "best_val": res.best_val,
                   "skipped": res.skipped} if res else {},
        "kind": "phase",
        "done": True,
        "global_step": trainer.global_step,
        "results": {k: dataclasses.asdict(v) for k, v in trainer.results.items()},
        "rng": ckpt.rng_state(),
    }
