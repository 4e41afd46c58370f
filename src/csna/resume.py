"""Interrupting and resuming a run: which run directories may be written, the furthest
saved training state, SIGINT/SIGTERM while training, and the test-only fault injection.

A run killed at any point (SIGKILL included) continues with ``csna train --resume RUN_DIR``
from ``latest.pt`` or the last phase checkpoint and ends where an uninterrupted run ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from . import checkpoint as ckpt
from .config import Config
from .data import CausalData
from .phases import PHASES

SPLITS_FILE = "splits.json"


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


class RunDirError(ValueError):
    """A run directory that cannot be used as asked (it holds a run, or is no run at all)."""


RUN_MARKERS = ("config.yaml", ckpt.LATEST) + tuple(ph.checkpoint for ph in PHASES.values())


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` holds (part of) a csna run."""
    return path.is_dir() and any((path / f).exists() for f in RUN_MARKERS)


def check_run_dir(path: Path, resume: bool = False, overwrite: bool = False) -> None:
    """Refuse a run directory that would lose or mix up saved work.

    A fresh run needs a missing or empty directory, or ``overwrite`` and a directory that holds
    a csna run (never an unrelated folder); ``resume`` needs a csna run.
    """
    if path.exists() and not path.is_dir():
        raise RunDirError(f"run directory {path} is a file, not a directory")
    if resume:
        if not is_run_dir(path) or not (path / "config.yaml").is_file():
            raise RunDirError(f"--resume {path}: not a csna run directory (config.yaml missing)")
        return
    if not path.is_dir() or not any(path.iterdir()):
        return
    if not is_run_dir(path):
        raise RunDirError(f"--out {path} is a non-empty directory that holds no csna run; "
                          "choose a new directory (--overwrite only replaces csna runs)")
    if not overwrite:
        raise RunDirError(f"--out {path} already holds a run; use --overwrite to replace it "
                          f"or --resume {path} to continue it")


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


def read_splits(rd: Path, data: CausalData) -> dict[str, np.ndarray]:
    try:
        raw = json.loads((rd / SPLITS_FILE).read_text())
        splits = {k: np.asarray(raw[k], dtype=np.int64) for k in ("train", "val", "test")}
    except (ValueError, KeyError, TypeError):
        raise ckpt.CheckpointError(f"{rd / SPLITS_FILE} is not a csna split file") from None
    top = max((int(v.max()) for v in splits.values() if len(v)), default=-1)
    if top >= data.n:
        raise ckpt.CheckpointError(f"{rd / SPLITS_FILE} does not match the data: the run was trained on at least "
                                   f"{top + 1} rows, '{data.name}' has {data.n}")
    return splits


@contextlib.contextmanager
def signals_saved(trainer: Any) -> Iterator[None]:
    """While training into a run directory, SIGINT/SIGTERM only set a flag; the step loop
    then saves the latest state and raises ``TrainingInterrupted``."""
    if trainer.run_dir is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        trainer._signal = signum

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
