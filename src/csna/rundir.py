"""A run directory (design §7): which directories may be written, the files a run starts and
ends with (config.yaml, env.json, preprocess.json, splits.json, history.json), and the
``Run`` that ``load_run`` rebuilds from them.

The CLI and ``CSNAEstimator`` both write and read runs through here, so a run made by one is
read by the other.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from . import checkpoint as ckpt
from .config import Config, config_from_dict, dump_config
from .data import CausalData, DataError
from .model import CSNAModel
from .phases import PHASES
from .prepare import Prepared, build_model, select_device
from .shrink import EFFECT_SCALE_FILE

if TYPE_CHECKING:  # only an annotation: loading a run does not need the training loop
    from .phases import PhaseResult
    from .train import Trainer

PREPROCESS_FILE = "preprocess.json"
SPLITS_FILE = "splits.json"
HISTORY_FILE = "history.json"
MEMBERS_DIR = "members"


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


def member_dir(run_dir: str | Path | None, j: int) -> Path | None:
    """Where ensemble member ``j`` ≥ 1 of a run lives: ``run_dir/members/<j>``."""
    return None if run_dir is None else Path(run_dir) / MEMBERS_DIR / str(j)


def environment(cfg: Config, device: torch.device) -> dict[str, Any]:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).parent).stdout.strip() or None
    except Exception:  # not a git checkout (installed wheel)
        commit = None
    # Here, not at the top: the package's __init__ imports the estimator, which imports this module.
    from . import __version__

    return {"python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__,
            "pandas": pd.__version__, "csna": __version__, "platform": platform.platform(),
            "seed": cfg.train.seed, "git_commit": commit, "device": str(device),
            "threads": torch.get_num_threads(),
            "cuda": torch.version.cuda if torch.cuda.is_available() else None}


@dataclass
class Run:
    """A trained model with what it needs to score new rows."""

    cfg: Config
    model: CSNAModel
    prep: Prepared
    splits: dict[str, np.ndarray] | None = None
    data: CausalData | None = None
    run_dir: Path | None = None
    trainer: Trainer | None = None
    phases_trained: tuple[int, ...] = ()
    # The other members of a seed ensemble (train.ensemble > 1), each a whole run of its own
    # in run_dir/members/<j>/; predictions average ``model`` and theirs.
    members: list["Run"] = field(default_factory=list)
    # The last phase checkpoint of a member trained in a worker without a run directory, kept
    # so that CSNAEstimator.save can write it.
    checkpoint: dict[str, Any] | None = None
    # Seconds in ``Trainer.fit`` (an ensemble: summed over its members); None for a run loaded
    # from disk, whose history.json holds the time instead.
    fit_seconds: float | None = None
    # {phase: (steps, epochs)} as training ran them (history.json's "steps" and "phases"): what
    # csna.fit_flops multiplies one step's FLOPs by.
    phase_counts: dict[int, tuple[int, int]] = field(default_factory=dict)
    # NaN/Inf values filled with training medians, per covariate column (data.impute).
    imputed: dict[str, int] = field(default_factory=dict)
    # The ensemble's effect shrinkage (csna.shrink; effect_scale.json), applied by
    # predict_features; None: τ̂ as the members predict it.
    effect_scale: dict[str, Any] | None = None

    @property
    def gated(self) -> bool:
        return 4 in self.phases_trained

    def all_members(self) -> list["Run"]:
        """This run and its ensemble members, the first member first."""
        return [self, *self.members]


def open_run_dir(rd: Path, resume: bool, overwrite: bool) -> None:
    """Create ``rd`` (emptied first when ``overwrite`` replaces a run there) and drop the
    temporary files a killed write left behind."""
    if overwrite and not resume and is_run_dir(rd):
        shutil.rmtree(rd)
    rd.mkdir(parents=True, exist_ok=True)
    ckpt.remove_stale_temporaries(rd)


def write_setup(rd: Path, cfg: Config, prep: Prepared, splits: dict[str, np.ndarray], device: torch.device) -> None:
    """What a run starts from: config.yaml, env.json, preprocess.json and splits.json."""
    dump_config(cfg, rd / "config.yaml")
    (rd / "env.json").write_text(json.dumps(environment(cfg, device), indent=2))
    (rd / PREPROCESS_FILE).write_text(json.dumps(prep.to_dict(), indent=2))
    (rd / SPLITS_FILE).write_text(json.dumps({k: v.tolist() for k, v in splits.items()}))


def write_history(rd: Path, results: dict[int, PhaseResult], imputed: dict[str, int], fit_seconds: float) -> None:
    """history.json: every phase's epoch records and steps, the batches it skipped, the imputed
    values and the seconds training took."""
    history = {str(k): v.history for k, v in sorted(results.items())}
    (rd / HISTORY_FILE).write_text(json.dumps({"phases": history, "imputed": imputed,
                                               "steps": {str(k): v.steps for k, v in sorted(results.items())},
                                               "skipped_batches": {str(k): v.skipped for k, v in
                                                                   sorted(results.items())},
                                               "time_fit_s": fit_seconds}, indent=2))


def write_effect_scale(rd: Path, es: dict[str, Any] | None) -> None:
    """effect_scale.json: the shrinkage ``predict_features`` applies; removed when there is none."""
    path = rd / EFFECT_SCALE_FILE
    if es is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(json.dumps(es, indent=2))


def add_member_times(rd: Path, total: float, each: list[float]) -> None:
    """An ensemble's history.json (the first member's) gets the fit seconds of all members."""
    hist = rd / HISTORY_FILE
    if hist.is_file():
        h = json.loads(hist.read_text())
        h.update(time_fit_s=total, time_fit_s_members=each)
        hist.write_text(json.dumps(h, indent=2))


def check_preprocessing(rd: Path, prep: Prepared) -> None:
    """A resumed run's preprocessing must come out as the one it saved.

    Raises:
        CheckpointError: the run was trained on other data.
    """
    if not (rd / PREPROCESS_FILE).is_file():
        return
    saved = json.loads((rd / PREPROCESS_FILE).read_text())
    if saved.get("preprocessor") != json.loads(json.dumps(prep.to_dict()["preprocessor"])):
        raise ckpt.CheckpointError(f"{rd / PREPROCESS_FILE} does not match the data: the run was trained on "
                                   "other data (its preprocessing comes out differently)")


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


def check_compatible(run: Run, data: CausalData, where: str) -> None:
    """Data to evaluate a trained run on must have its covariates, treatments and outcome type.

    Raises:
        DataError: naming the first mismatch and the run directory.
    """
    rd = run.run_dir or "the trained model"
    missing = [c for c in run.prep.pre.input_columns_ if c not in data.X.columns]
    if missing:
        raise DataError(f"{where}: missing covariate column(s) {', '.join(missing[:8])} that {rd} was trained on")
    if data.n_treatments != run.prep.n_treatments:
        raise DataError(f"{where} has {data.n_treatments} treatment groups; {rd} was trained with "
                        f"{run.prep.n_treatments}")
    if data.outcome_type != run.prep.outcome_type:
        raise DataError(f"{where} has a {data.outcome_type} outcome; {rd} was trained on a "
                        f"{run.prep.outcome_type} one")
    if run.splits is not None:
        top = max((int(np.max(v)) for v in run.splits.values() if len(v)), default=-1)
        if top >= data.n:
            raise DataError(f"{where} has {data.n} rows but the split saved in {rd} indexes row {top}; "
                            "pass --data to evaluate on other data")


def history_counts(history: dict[str, Any]) -> dict[int, tuple[int, int]]:
    """{phase: (steps, epochs)} from history.json; empty for one written before steps were kept."""
    steps, phases = history.get("steps") or {}, history.get("phases") or {}
    return {int(k): (int(v), len(phases.get(k, []))) for k, v in steps.items()}


def load_run(run_dir: str | Path, device: str = "auto") -> Run:
    """Rebuild a trained model from a run directory: the last phase checkpoint present."""
    rd = Path(run_dir)
    if not rd.is_dir():
        raise ckpt.CheckpointError(f"run directory not found: {rd}")
    found = [n for n, ph in PHASES.items() if (rd / ph.checkpoint).is_file()]
    if not found:
        raise ckpt.CheckpointError(f"no phase checkpoint ({', '.join(p.checkpoint for p in PHASES.values())}) in {rd}")
    if not (rd / PREPROCESS_FILE).is_file():
        raise ckpt.CheckpointError(f"{rd / PREPROCESS_FILE} is missing: the run cannot transform new data")
    last = max(found)
    state = ckpt.load(rd / PHASES[last].checkpoint)
    cfg = config_from_dict(state["config"])
    prep = Prepared.from_dict(json.loads((rd / PREPROCESS_FILE).read_text()))
    dev = select_device(device)
    model = build_model(prep, cfg, dev)
    try:
        model.load_state_dict(state["model_state"], strict=True)
    except RuntimeError as exc:
        raise ckpt.CheckpointError(f"{rd / PHASES[last].checkpoint} does not match the model its config builds: "
                                   f"{str(exc).splitlines()[0]}") from None
    model.eval()
    splits = None
    if (rd / SPLITS_FILE).is_file():
        splits = {k: np.asarray(v, dtype=np.int64) for k, v in json.loads((rd / SPLITS_FILE).read_text()).items()}
    run = Run(cfg, model, prep, splits, None, rd, None, tuple(found))
    if (rd / HISTORY_FILE).is_file():
        run.phase_counts = history_counts(json.loads((rd / HISTORY_FILE).read_text()))
    if (rd / EFFECT_SCALE_FILE).is_file():
        run.effect_scale = json.loads((rd / EFFECT_SCALE_FILE).read_text())
    for j in range(1, cfg.train.ensemble):
        md = member_dir(rd, j)
        if not any((md / ph.checkpoint).is_file() for ph in PHASES.values()):
            break  # an interrupted run: the members trained so far (csna train --resume adds the rest)
        member = load_run(md, device)
        if member.prep.to_dict() != prep.to_dict():
            raise ckpt.CheckpointError(f"{md} does not belong to {rd}: its preprocessing differs")
        run.members.append(member)
    return run


def save_run(run: Run, rd: Path) -> Path:
    """Write one trained model (an ensemble member) as a run directory: config.yaml, env.json,
    preprocess.json, splits.json and the checkpoint of its last trained phase (``CSNAEstimator.save``)."""
    last = max(run.phases_trained, default=0)
    if last == 0:
        raise ckpt.CheckpointError("no phase was trained (every phase has epochs 0): nothing to save")
    ph = PHASES[last]
    others = [p.checkpoint for p in PHASES.values() if p is not ph and (rd / p.checkpoint).exists()]
    if others:
        raise ckpt.CheckpointError(f"{rd} already holds another csna run ({', '.join(others)}); "
                                   "save to a new directory")
    rd.mkdir(parents=True, exist_ok=True)
    dump_config(run.cfg, rd / "config.yaml")
    (rd / "env.json").write_text(json.dumps(environment(run.cfg, run.model.y_mean.device), indent=2))
    (rd / PREPROCESS_FILE).write_text(json.dumps(run.prep.to_dict(), indent=2))
    if run.splits is not None:
        (rd / SPLITS_FILE).write_text(json.dumps({k: np.asarray(v).tolist() for k, v in run.splits.items()}))
    if run.trainer is not None:
        trainer, kept = run.trainer, run.trainer.run_dir
        trainer.run_dir = rd
        try:
            trainer.save_phase_checkpoint(last)
        finally:
            trainer.run_dir = kept
    elif run.run_dir is not None and Path(run.run_dir).resolve() != rd.resolve():
        ckpt.atomic_save(ckpt.load(Path(run.run_dir) / ph.checkpoint), rd / ph.checkpoint)
    elif run.checkpoint is not None:  # a member trained in a worker process, held in memory
        ckpt.atomic_save(run.checkpoint, rd / ph.checkpoint)
    return rd
