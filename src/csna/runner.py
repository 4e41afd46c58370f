"""A whole run: data → split → preprocessing → model → four phases → run directory.

The CLI and ``CSNAEstimator`` both go through here, so a run made by one is read by the other.
"""

from __future__ import annotations

import copy
import json
import multiprocessing as mp
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import checkpoint as ckpt
from .config import Config, ConfigError, config_from_dict, dump_config
from .data import CausalData, DataError, Preprocessor, ihdp, load_table, split_indices, synthetic
from .data import validate as validate_data
from .dist import current as dist_current
from .logger import RunLogger
from .model import CSNAModel
from .perf import tune_malloc
from .phases import PHASES
from .resume import (RUN_MARKERS, SPLITS_FILE, RunDirError, check_resumable, check_run_dir,  # noqa: F401
                     completed_phases, is_run_dir, read_splits, resume_state)
from .train import Split, Trainer, set_seed

PREPROCESS_FILE = "preprocess.json"


def select_device(name: str) -> torch.device:
    if name == "auto":
        # torchrun on GPUs: csna.dist.init_from_env has set this process's device (LOCAL_RANK).
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"config key 'train.device' is '{name}' but no CUDA device is available")
    return dev


def load_data(cfg: Config) -> CausalData:
    d = cfg.data
    if d.source == "ihdp":
        return ihdp(d.replication)
    if d.source == "synthetic":
        return synthetic(d.synthetic_n, d.synthetic_p, d.synthetic_seed, outcome=d.synthetic_outcome)
    return load_table(d.source, treatment=d.treatment, outcome=d.outcome,
                      covariates=d.covariates or None, outcome_type=d.outcome_type, impute=d.impute)


@dataclass
class Prepared:
    """Everything fitted on the training split that must travel with the model."""

    pre: Preprocessor
    outcome_type: str
    n_treatments: int
    n_classes: int
    y_mean: float
    y_std: float
    impute: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"preprocessor": self.pre.to_dict(), "outcome_type": self.outcome_type,
                "n_treatments": self.n_treatments, "n_classes": self.n_classes,
                "y_mean": self.y_mean, "y_std": self.y_std, "impute": self.impute}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Prepared":
        return cls(Preprocessor.from_dict(d["preprocessor"]), d["outcome_type"], int(d["n_treatments"]),
                   int(d["n_classes"]), float(d["y_mean"]), float(d["y_std"]), dict(d.get("impute", {})))

    def features(self, X: pd.DataFrame) -> np.ndarray:
        """(n, p_out) float32 features, with the training medians filled in (for NaN and
        ±Inf) when imputing."""
        if self.impute:
            cols = [c for c in self.impute if c in X.columns]
            X = X.copy()
            X[cols] = X[cols].replace([np.inf, -np.inf], np.nan)
            X = X.fillna({c: self.impute[c] for c in cols})
        return self.pre.transform(X)


def fit_preparation(cfg: Config, data: CausalData, train_idx: np.ndarray) -> Prepared:
    Xtr = data.X.iloc[train_idx]
    impute: dict[str, float] = {}
    if cfg.data.impute:
        # Every numeric column gets its training median, so new rows may miss any value.
        num = Xtr.select_dtypes(include="number").replace([np.inf, -np.inf], np.nan)
        for c in num.columns:
            med = num[c].median()
            if not np.isfinite(med):
                raise DataError(f"covariate '{c}' has no observed value in the {len(train_idx)} training rows "
                                f"of '{data.name}': nothing to impute it from")
            impute[str(c)] = float(med)
    pre = Preprocessor().fit(Xtr.fillna(impute) if impute else Xtr)
    if data.outcome_type == "continuous":
        y = data.Y[train_idx].astype(np.float64)
        y_mean, y_std = (float(y.mean()), float(y.std()) or 1.0) if cfg.train.standardize_outcome else (0.0, 1.0)
        n_classes = 0
    else:
        y_mean, y_std = 0.0, 1.0
        n_classes = max(2, int(data.Y.max()) + 1)
    return Prepared(pre, data.outcome_type, data.n_treatments, n_classes, y_mean, y_std, impute)


def missing_counts(data: CausalData) -> dict[str, int]:
    """NaN/Inf values per covariate column (only the columns that have any)."""
    out = {}
    for c in data.X.columns:
        col = data.X[c]
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            bad = int(np.count_nonzero(~np.isfinite(col.to_numpy(dtype=np.float64, na_value=np.nan))))
        else:
            bad = int(col.isna().sum())
        if bad:
            out[str(c)] = bad
    return out


def to_split(prep: Prepared, data: CausalData, idx: np.ndarray, device: torch.device) -> Split:
    x = torch.from_numpy(prep.features(data.X.iloc[idx])).to(device)
    t = torch.from_numpy(data.T[idx].astype(np.int64)).to(device)
    if prep.n_classes:
        y = torch.from_numpy(data.Y[idx].astype(np.int64)).to(device)
    else:
        y = torch.from_numpy(((data.Y[idx] - prep.y_mean) / prep.y_std).astype(np.float32)).to(device)
    return Split(x, t, y)


def build_model(prep: Prepared, cfg: Config, device: torch.device) -> CSNAModel:
    model = CSNAModel(len(prep.pre.feature_names_), prep.n_treatments, prep.n_classes, cfg.model)
    model.y_mean.fill_(prep.y_mean)
    model.y_std.fill_(prep.y_std)
    return model.to(device)


def environment(cfg: Config, device: torch.device) -> dict[str, Any]:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).parent).stdout.strip() or None
    except Exception:  # not a git checkout (installed wheel)
        commit = None
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

    @property
    def gated(self) -> bool:
        return 4 in self.phases_trained

    def all_members(self) -> list["Run"]:
        """This run and its ensemble members, the first member first."""
        return [self, *self.members]


def split_data(cfg: Config, data: CausalData) -> dict[str, np.ndarray]:
    seed = cfg.data.split_seed if cfg.data.split_seed >= 0 else cfg.train.seed
    if data.extra.get("split") is not None:  # a fixed split shipped with the data
        tr, va, te = data.extra["split"]
    else:
        try:
            tr, va, te = split_indices(data.n, tuple(cfg.data.split), seed=seed, stratify=data.T)
        except ValueError as exc:  # sklearn: a part too small to hold every treatment group
            raise DataError(f"too few rows for the splits: {data.n} rows of '{data.name}' cannot be split "
                            f"{list(cfg.data.split)} (config key 'data.split') with every treatment group "
                            f"in each part ({str(exc).splitlines()[0]})") from None
    return {"train": np.asarray(tr), "val": np.asarray(va), "test": np.asarray(te)}


def stream_requested(cfg: Config, data: CausalData | None) -> bool:
    if not cfg.data.stream:
        return False
    if data is not None or cfg.data.source in ("ihdp", "synthetic"):
        raise ConfigError("data.stream reads a CSV or Parquet file chunk by chunk; data.source "
                          f"'{cfg.data.source}' is built in memory (write it with `csna data synthetic`)")
    if cfg.data.impute:
        raise ConfigError("data.impute needs the training medians of the whole table; it is not available "
                          "with data.stream (clean the file, or train without streaming)")
    return True


def _prepare_stream(cfg: Config, device: torch.device, prep: Prepared | None = None):
    """(evaluation data, its split, preprocessing, training batch source, rows in the file) of
    a streamed table (``csna.streaming``)."""
    from . import streaming

    sc = streaming.scan(cfg)
    fit = streaming.fit_data(sc)
    fit_idx = np.arange(len(fit.T))
    check_splits(fit, {"train": fit_idx, "val": np.arange(len(sc.val.T))})
    if len(sc.val.T) < 2 or len(sc.test.T) < 1:
        raise DataError(f"{sc.path}: too few validation / test rows for data.split {list(cfg.data.split)}")
    prep = prep or fit_preparation(cfg, fit, fit_idx)
    data, splits = streaming.eval_data(sc)
    cov, treat, out = sc.covariates, sc.treatment, sc.outcome

    def transform(df: pd.DataFrame):
        y = df[out].to_numpy()
        y = y.astype(np.int64) if prep.n_classes else ((y - prep.y_mean) / prep.y_std).astype(np.float32)
        return prep.features(df[cov]), df[treat].to_numpy(np.int64), y

    n_rows = streaming.count_rows(sc)
    seed = cfg.data.split_seed if cfg.data.split_seed >= 0 else cfg.train.seed
    n_train = streaming.count_split(n_rows, tuple(cfg.data.split), seed)
    probe = to_split(prep, fit, fit_idx, device)
    return data, splits, prep, streaming.StreamSource(cfg, sc, transform, n_train, probe, device), n_rows


def check_splits(data: CausalData, splits: dict[str, np.ndarray]) -> None:
    """The checks that need the split: enough rows, every treatment group and every outcome
    class in the training part."""
    n_tr, n_va = len(splits["train"]), len(splits["val"])
    if n_tr < 4 or n_va < 2:
        raise DataError(f"too few rows for the splits: {data.n} rows of '{data.name}' give {n_tr} train / "
                        f"{n_va} validation rows (at least 4 / 2 needed; config key 'data.split')")
    groups = np.unique(data.T[splits["train"]])
    if len(groups) < data.n_treatments:
        lacking = sorted(set(range(data.n_treatments)) - set(groups.tolist()))
        raise DataError(f"the {n_tr} training rows of '{data.name}' lack treatment group(s) {lacking}; "
                        "more rows or another split seed (data.split_seed) are needed")
    if data.outcome_type != "continuous":
        classes = np.unique(data.Y[splits["train"]])
        if len(classes) < 2:
            raise DataError(f"the {n_tr} training rows of '{data.name}' hold one outcome class only "
                            f"({classes.tolist()}); a classifier needs at least two")


MEMBERS_DIR = "members"


def member_dir(run_dir: str | Path | None, j: int) -> Path | None:
    """Where ensemble member ``j`` ≥ 1 of a run lives: ``run_dir/members/<j>``."""
    return None if run_dir is None else Path(run_dir) / MEMBERS_DIR / str(j)


def member_config(cfg: Config, j: int) -> Config:
    """Member ``j``'s config: seed ``train.seed + j``, a single model (it is one member)."""
    out = copy.deepcopy(cfg)
    out.train.seed = cfg.train.seed + j
    out.train.ensemble = 1
    # The first member's split seed, so a streamed table splits its rows the same way.
    out.data.split_seed = cfg.data.split_seed if cfg.data.split_seed >= 0 else cfg.train.seed
    return out


def member_splits(splits: dict[str, np.ndarray], t: np.ndarray, j: int, resplit: bool) -> dict[str, np.ndarray]:
    """Member ``j``'s split: the first member's, or with ``resplit`` the same test rows and the
    other rows redrawn into train / validation (stratified by treatment ``t``, seed ``j``)."""
    if not resplit or j == 0 or len(splits["val"]) == 0:
        return splits
    from sklearn.model_selection import train_test_split

    rest = np.sort(np.concatenate([splits["train"], splits["val"]]))
    try:
        tr, va = train_test_split(rest, test_size=len(splits["val"]), random_state=j, stratify=t[rest])
    except ValueError:  # a treatment group too small to stratify: keep the first member's split
        return splits
    return {"train": np.sort(tr), "val": np.sort(va), "test": np.asarray(splits["test"])}


def train_run(cfg: Config, data: CausalData | None = None, run_dir: str | Path | None = None,
              progress: bool = False, splits: dict[str, np.ndarray] | None = None,
              resume: bool = False, overwrite: bool = False) -> Run:
    """Train all four phases of every ensemble member and, with ``run_dir``, write the run
    directory (design §7); the members after the first go to ``run_dir/members/<j>/``.

    Same arguments and errors as ``train_member``; ``resume`` continues each member from its
    furthest saved state and starts the members not begun yet.
    """
    streamed = cfg.data.stream
    workers = ensemble_workers(cfg)
    pool = _MemberPool(cfg, workers, resume) if workers > 1 else None
    if pool is not None and progress:
        print(f"csna: ensemble of {cfg.train.ensemble}: members train {workers} at a time, "
              f"{workers - 1} of them in other processes (progress bars show this process's)", file=sys.stderr)
    try:
        # The other members start in worker processes as soon as the first member's split and
        # preprocessing are fixed (and its run directory written); the first trains here, and
        # then this process takes its share of the rest (members j with j % workers == 0), so
        # no core idles while another has two members queued.
        run = train_member(cfg, data, run_dir, progress, splits, resume, overwrite,
                           on_ready=pool.start if pool is not None else None)
        own: dict[int, Run] = {}
        for j in range(1, cfg.train.ensemble):
            if pool is not None and j in pool.members:
                continue
            md = member_dir(run.run_dir, j)
            sp = None if streamed else member_splits(run.splits, run.data.T, j, cfg.train.ensemble_resplit)
            own[j] = train_member(member_config(cfg, j), None if streamed else run.data, md, progress, sp,
                                  resume=bool(resume and md is not None and is_run_dir(md)), prep=run.prep)
        if pool is not None:
            own.update(zip(pool.members, pool.collect()))
        run.members.extend(own[j] for j in sorted(own))
    finally:
        if pool is not None:
            pool.close()
    if run.members:
        each = [float(m.fit_seconds) for m in run.all_members()]  # type: ignore[attr-defined]
        run.fit_seconds = sum(each)  # type: ignore[attr-defined]
        hist = run.run_dir / "history.json" if run.run_dir is not None else None
        if hist is not None and hist.is_file() and dist_current().is_main:
            h = json.loads(hist.read_text())
            h.update(time_fit_s=run.fit_seconds, time_fit_s_members=each)  # type: ignore[attr-defined]
            hist.write_text(json.dumps(h, indent=2))
    return run


def ensemble_workers(cfg: Config) -> int:
    """Processes that train an ensemble's members at once: ``train.ensemble_workers``, or with
    0 as many as there are members and usable CPU cores; 1 (one after another) for a single
    model, a streamed table or a data-parallel run."""
    m = cfg.train.ensemble
    # A daemonic process (a multiprocessing.Pool worker) may not start processes of its own.
    if m <= 1 or cfg.data.stream or dist_current().enabled or mp.current_process().daemon:
        return 1
    if cfg.train.ensemble_workers > 0:
        return min(cfg.train.ensemble_workers, m)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(m, cores // max(cfg.train.threads, 1)))


def _member_job(cfg: Config, data: CausalData, run_dir: str, splits: dict[str, np.ndarray], resume: bool,
                prep: Prepared) -> float:
    """Train one ensemble member in a worker process into ``run_dir``; its fit seconds."""
    import warnings

    from .train import TrainingError

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    try:
        return float(train_member(cfg, data, run_dir, False, splits, resume=resume, prep=prep).fit_seconds)
    except Exception:
        raise
    except BaseException as exc:  # SIGINT / SIGTERM: a pool worker dies on these and its task never returns
        raise TrainingError(f"ensemble member in {run_dir}: {exc}") from None


class _MemberPool:
    """The members of an ensemble that ``workers − 1`` spawned processes train while the first
    member, and then the others not listed here, train in the calling process. Each writes its
    own run directory (``members/<j>/``, or a temporary one for a run without a directory) and
    is loaded back from it; the results are the ones training one after another gives."""

    def __init__(self, cfg: Config, workers: int, resume: bool):
        self.cfg, self.workers, self.resume = cfg, workers, resume
        # Member j goes to a worker unless j % workers == 0: those the calling process trains
        # after the first, so M members take ceil(M / workers) rounds of training.
        self.members = [j for j in range(1, cfg.train.ensemble) if j % workers]
        self.pool = None
        self.jobs: list[tuple[int, Path, bool, Any]] = []
        self.tmp: str | None = None

    def start(self, run_dir: Path | None, data: CausalData, splits: dict[str, np.ndarray], prep: Prepared) -> None:
        import tempfile

        if run_dir is None:
            self.tmp = tempfile.mkdtemp(prefix="csna-members-")
        # spawn: a forked child of a process that has started torch's thread pools can hang.
        self.pool = mp.get_context("spawn").Pool(self.workers - 1)
        for j in self.members:
            md = member_dir(run_dir if run_dir is not None else self.tmp, j)
            again = bool(self.resume and run_dir is not None and is_run_dir(md))
            sp = member_splits(splits, data.T, j, self.cfg.train.ensemble_resplit)
            job = self.pool.apply_async(_member_job, (member_config(self.cfg, j), data, str(md), sp, again, prep))
            self.jobs.append((j, md, run_dir is None, job))

    def collect(self) -> list[Run]:
        out = []
        for _, md, temporary, job in self.jobs:
            fit = job.get()  # a worker's exception is raised here
            member = load_run(md, device=self.cfg.train.device)
            member.fit_seconds = fit  # type: ignore[attr-defined]
            if temporary:  # keep what saving needs in memory; the directory goes
                last = max(member.phases_trained)
                member.checkpoint = ckpt.load(md / PHASES[last].checkpoint)
                member.run_dir = None
            out.append(member)
        return out

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()  # after an error or Ctrl-C here, the members stop too
            self.pool.join()
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)


def train_member(cfg: Config, data: CausalData | None = None, run_dir: str | Path | None = None,
                 progress: bool = False, splits: dict[str, np.ndarray] | None = None,
                 resume: bool = False, overwrite: bool = False, prep: Prepared | None = None,
                 on_ready=None) -> Run:
    """Train all four phases of one model and, with ``run_dir``, write its run directory.

    Every check (data, splits, a resumed run's checkpoints against the data and config) runs
    before anything is written, so bad input never touches saved work.

    Args:
        resume: continue the run in ``run_dir`` from its furthest saved state (``latest.pt``
            or the last phase checkpoint); the split is read back from the run directory and
            the preprocessing must come out as saved. The result is the one an uninterrupted
            run gives.
        overwrite: replace a run that ``run_dir`` already holds (without it, an existing run is
            refused: use ``resume``).
        prep: preprocessing to use instead of fitting it on the training rows (an ensemble's
            members share the first member's, so one feature matrix feeds them all).
        on_ready: called as ``on_ready(run_dir, data, splits, prep)`` once every check has
            passed and the run directory is written, before training starts.

    Raises:
        DataError, ConfigError, CheckpointError, RunDirError: bad input, with a one-line message.
        TrainingError: training cannot go on (non-finite losses); TrainingInterrupted: SIGINT or
        SIGTERM, after saving the latest state.
    """
    tune_malloc()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    if cfg.train.checkpoint_every < 0:
        raise ConfigError(f"config key 'train.checkpoint_every' must be >= 0, got {cfg.train.checkpoint_every}")
    if cfg.train.deterministic:
        # cuBLAS needs a fixed workspace for reproducible matmuls; it is read when CUDA starts.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    set_seed(cfg.train.seed)
    device = select_device(cfg.train.device)
    ctx = dist_current()
    rd = Path(run_dir) if run_dir is not None else None
    if rd is not None and ctx.is_main:
        check_run_dir(rd, resume=resume, overwrite=overwrite)
    streamed = stream_requested(cfg, data)
    if streamed:
        if resume:
            raise ConfigError("a streamed run (data.stream) cannot be resumed; start it again with --overwrite")
        data, splits, prep, train_source, _ = _prepare_stream(cfg, device, prep)
        missing = {}
    elif data is None:
        data = load_data(cfg)
    else:
        validate_data(data, allow_missing=cfg.data.impute)
    if not streamed:
        missing = missing_counts(data)
    if missing and not cfg.data.impute:
        col, n_bad = next(iter(missing.items()))
        raise DataError(f"covariate '{col}' has {n_bad} NaN/Inf values in '{data.name}'; "
                        "set data.impute (csna train --impute) to fill them with training medians")
    state = None
    if resume and rd is not None:
        state = resume_state(rd, device)
        if (rd / SPLITS_FILE).is_file():
            splits = read_splits(rd, data)
    if not streamed:
        splits = splits or split_data(cfg, data)
        check_splits(data, splits)
        prep = prep or fit_preparation(cfg, data, splits["train"])
    if resume and rd is not None and (rd / PREPROCESS_FILE).is_file():
        saved = json.loads((rd / PREPROCESS_FILE).read_text())
        if saved.get("preprocessor") != json.loads(json.dumps(prep.to_dict()["preprocessor"])):
            raise ckpt.CheckpointError(f"{rd / PREPROCESS_FILE} does not match the data: the run was trained on "
                                       "other data (its preprocessing comes out differently)")
    set_seed(cfg.train.seed)
    model = build_model(prep, cfg, device)
    if state is not None:
        check_resumable(state, cfg, list(prep.pre.feature_names_), rd)
        try:
            model.load_state_dict(state["model_state"], strict=True)
        except RuntimeError as exc:
            raise ckpt.CheckpointError(f"{rd / state['file']} does not match this data and config: "
                                       f"{str(exc).splitlines()[0]}") from None
    meta = {"features": list(prep.pre.feature_names_), "covariates": list(prep.pre.input_columns_),
            "n_treatments": prep.n_treatments, "n_classes": prep.n_classes,
            "outcome_type": prep.outcome_type, "data": data.name}
    imputed = {c: n for c, n in missing.items()} if cfg.data.impute else {}
    logger = RunLogger(None)
    # In a data-parallel run only rank 0 writes (run directory, checkpoints, logs); every rank
    # trains on its slice of each global batch (csna.dist).
    if rd is not None and ctx.is_main:
        if overwrite and not resume and is_run_dir(rd):
            shutil.rmtree(rd)
        rd.mkdir(parents=True, exist_ok=True)
        ckpt.remove_stale_temporaries(rd)
        dump_config(cfg, rd / "config.yaml")
        (rd / "env.json").write_text(json.dumps(environment(cfg, device), indent=2))
        (rd / PREPROCESS_FILE).write_text(json.dumps(prep.to_dict(), indent=2))
        (rd / SPLITS_FILE).write_text(json.dumps({k: v.tolist() for k, v in splits.items()}))
        logger = RunLogger(rd, cfg.log.tensorboard, cfg.log.wandb, cfg.log.wandb_project,
                           cfg.log.wandb_mode, cfg.to_dict())
        if resume and logger.tb is not None:
            # Drop the events logged after the saved state; the resumed run logs them again.
            from torch.utils.tensorboard import SummaryWriter

            logger.tb.close()
            logger.tb = SummaryWriter(log_dir=str(rd / "tb"),
                                      purge_step=int(state.get("global_step", 0)) if state else 0)
        if imputed:
            logger.text("data/imputed", json.dumps(imputed))
    if on_ready is not None:
        on_ready(rd, data, splits, prep)
    bar = _progress_factory(cfg.train.seed) if progress and ctx.is_main else None
    trainer = Trainer(model, cfg, train_source if streamed else to_split(prep, data, splits["train"], device),
                      to_split(prep, data, splits["val"], device), rd if ctx.is_main else None, logger, meta, bar)
    if state is None:
        phases = tuple(PHASES)
    elif state.get("done"):
        phases = tuple(n for n in PHASES if n > int(state["phase"]))
    else:
        phases = tuple(n for n in PHASES if n >= int(state["phase"]))
    t0 = time.perf_counter()
    try:
        trainer.fit(phases, resume=state)
    finally:
        logger.close()
    fit_seconds = time.perf_counter() - t0
    model.eval()
    trained = tuple(n for n in PHASES if n in trainer.results or (rd is not None and (rd / PHASES[n].checkpoint).is_file()))
    run = Run(cfg, model, prep, splits, data, rd, trainer, trained)
    run.imputed = imputed  # type: ignore[attr-defined]
    if rd is not None and ctx.is_main:
        history = {str(k): v.history for k, v in sorted(trainer.results.items())}
        (rd / "history.json").write_text(json.dumps({"phases": history, "imputed": imputed,
                                                     "skipped_batches": {str(k): v.skipped for k, v in
                                                                         sorted(trainer.results.items())},
                                                     "time_fit_s": fit_seconds}, indent=2))
    run.fit_seconds = fit_seconds  # type: ignore[attr-defined]
    return run


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
    for j in range(1, cfg.train.ensemble):
        md = member_dir(rd, j)
        if not any((md / ph.checkpoint).is_file() for ph in PHASES.values()):
            break  # an interrupted run: the members trained so far (csna train --resume adds the rest)
        member = load_run(md, device)
        if member.prep.to_dict() != prep.to_dict():
            raise ckpt.CheckpointError(f"{md} does not belong to {rd}: its preprocessing differs")
        run.members.append(member)
    return run


def _progress_factory(seed: int):
    """A tqdm bar per phase with the running loss (and the seed, which tells ensemble members apart)."""
    from tqdm import tqdm

    def make(total: int, desc: str):
        bar = tqdm(total=total, desc=f"{desc} (seed {seed})", leave=True, dynamic_ncols=True, file=sys.stderr)
        ema = [None]

        def update(loss):
            if loss is None:
                bar.close()
                return
            ema[0] = loss if ema[0] is None else 0.9 * ema[0] + 0.1 * loss
            bar.set_postfix(loss=f"{ema[0]:.4f}", refresh=False)
            bar.update(1)

        return update

    return make
