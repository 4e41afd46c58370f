"""Checkpoints: plain dicts of tensors and Python values, written atomically, read safely.

A checkpoint never holds a pickled object: ``torch.load(path, weights_only=True)`` reads
every file this module writes, and this module reads nothing any other way, so a crafted
pickle is refused before its payload can run (design "Interface: safe files").
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

# v2: the propensity head reads the covariates (p inputs) instead of the pooled representation.
FORMAT = "csna-checkpoint-v2"
LATEST = "latest.pt"  # the latest training state, rewritten every train.checkpoint_every steps


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not match."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (full disk, no permission); the previous file is intact."""

    def __str__(self) -> str:
        return self.strerror or "checkpoint write failed"


def atomic_save(obj: Any, path: str | Path) -> None:
    """Write to a temporary file in the same directory, fsync, then ``os.replace``: a crash
    or a full disk mid-write leaves the previous file intact and no temporary file behind.

    Raises:
        CheckpointWriteError: the write failed; ``errno`` is the original one (e.g. ENOSPC).
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a checkpoint is an ordinary file
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(path.parent)
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise CheckpointWriteError(exc.errno, f"cannot write checkpoint {path}: {reason}; "
                                              "the previous file is unchanged") from exc
    except RuntimeError as exc:  # torch.save wraps some I/O failures (e.g. a full disk) in RuntimeError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointWriteError(None, f"cannot write checkpoint {path}: {first[:160]}; "
                                         "the previous file is unchanged") from exc
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete the ``.NAME.*.tmp`` files a process killed mid-write left behind."""
    gone = []
    for p in Path(directory).glob(".*.pt.*.tmp"):
        try:
            p.unlink()
            gone.append(p)
        except OSError:
            pass
    return gone


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; anything else is refused."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"refused to load {path}: not a safe checkpoint ({first[:160]})") from None
    except Exception as exc:  # truncated or foreign file
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}") from None
    if isinstance(obj, dict) and str(obj.get("format", "")).startswith("csna-checkpoint-") and obj["format"] != FORMAT:
        raise CheckpointError(f"{path} was written by another csna version (format {obj['format']}; this one "
                              f"reads {FORMAT}): train the run again")
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a csna checkpoint (format {FORMAT} expected)")
    return obj


def rng_state() -> dict[str, Any]:
    """Every RNG state as tensors or lists of ints, so safe loading reads them back."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "python": _py_state_to_plain(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    # A checkpoint loaded with map_location="cuda" carries its RNG states on the GPU, but torch
    # takes them back only as CPU byte tensors (a resume on CUDA failed here).
    torch.set_rng_state(state["torch"].cpu())
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _py_state_to_plain(st: tuple) -> list:
    version, internal, gauss_next = st
    return [version, list(internal), gauss_next]
