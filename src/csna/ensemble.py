"""A whole run: every member of a seed ensemble through data → split → preprocessing → model →
four phases, and the processes that train the members at once.

``train_member`` is one model's run; ``train_run`` trains ``train.ensemble`` of them (member
``j`` with seed ``train.seed + j``, its own split with ``train.ensemble_resplit``) and gathers
them into one ``Run``.
"""

from __future__ import annotations

import copy
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import checkpoint as ckpt
from .config import Config, ConfigError
from .splits import base_split_seed
from .data import CausalData, DataError
from .data import validate as validate_data
from .dist import current as dist_current
from .launch import planned_workers, take_prestarted
from .logger import RunLogger
from .perf import tune_malloc
from .phases import PHASES
from .prepare import (Prepared, build_model, check_splits, fit_preparation, load_data, missing_counts,
                      prepare_stream, select_device, split_data, stream_requested, to_split)
from .schedule import resolve_schedule
from .shrink import fit_effect_scale
from .dr import held_out
from .resume import check_resumable, resume_state
from .rundir import (SPLITS_FILE, Run, add_member_times, check_preprocessing, check_run_dir, is_run_dir,
                     load_run, member_dir, open_run_dir, read_splits, write_effect_scale, write_history,
                     write_setup)
from .train import Trainer, TrainingError, set_seed


def member_config(cfg: Config, j: int) -> Config:
    """Member ``j``'s config: seed ``train.seed + j``, a single model (it is one member)."""
    out = copy.deepcopy(cfg)
    out.train.seed = cfg.train.seed + j
    out.train.ensemble = 1
    # The first member's split seed, so a streamed table splits its rows the same way.
    out.data.split_seed = base_split_seed(cfg)
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
    if cfg.train.effect_shrink != "none" and not streamed:
        ho = held_out(run, run.data)
        run.effect_scale = None if ho is None else fit_effect_scale(
            ho, run.prep.n_treatments, run.prep.outcome_type, cfg.train.seed, tests=cfg.train.effect_shrink == "rloss",
            outcome=cfg.train.shrink_outcome, reliability=cfg.train.shrink_reliability,
            level=cfg.train.shrink_level)
        if run.run_dir is not None and dist_current().is_main:
            write_effect_scale(run.run_dir, run.effect_scale)
    if run.members:
        each = [float(m.fit_seconds) for m in run.all_members()]
        run.fit_seconds = sum(each)
        if run.run_dir is not None and dist_current().is_main:
            add_member_times(run.run_dir, run.fit_seconds, each)
    return run


def ensemble_workers(cfg: Config) -> int:
    """Processes that train an ensemble's members at once: ``train.ensemble_workers``, or with
    0 as many as there are members and usable CPU cores; 1 (one after another) for a single
    model, a streamed table or a data-parallel run."""
    return planned_workers(cfg, dist_current().enabled, mp.current_process().daemon)


def _member_job(cfg: Config, data: CausalData, run_dir: str, splits: dict[str, np.ndarray], resume: bool,
                prep: Prepared) -> tuple[float, dict[int, tuple[int, int]]]:
    """Train one ensemble member in a worker process into ``run_dir``; its fit seconds and
    phase counts."""
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    try:
        member = train_member(cfg, data, run_dir, False, splits, resume=resume, prep=prep)
        return float(member.fit_seconds), member.phase_counts
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
        if run_dir is None:
            self.tmp = tempfile.mkdtemp(prefix="csna-members-")
        # The workers `csna train` started before its imports (csna.launch), or new ones; spawn:
        # a forked child of a process that has started torch's thread pools can hang.
        self.pool = take_prestarted(self.workers - 1) or mp.get_context("spawn").Pool(self.workers - 1)
        for j in self.members:
            md = member_dir(run_dir if run_dir is not None else self.tmp, j)
            again = bool(self.resume and run_dir is not None and is_run_dir(md))
            sp = member_splits(splits, data.T, j, self.cfg.train.ensemble_resplit)
            job = self.pool.apply_async(_member_job, (member_config(self.cfg, j), data, str(md), sp, again, prep))
            self.jobs.append((j, md, run_dir is None, job))

    def collect(self) -> list[Run]:
        out = []
        for _, md, temporary, job in self.jobs:
            fit, counts = job.get()  # a worker's exception is raised here
            member = load_run(md, device=self.cfg.train.device)
            member.fit_seconds, member.phase_counts = fit, counts
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
        data, splits, prep, train_source, _ = prepare_stream(cfg, device, prep)
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
    if resume and rd is not None:
        check_preprocessing(rd, prep)
    # Phase lengths from the training rows (csna.schedule); config.yaml records the result.
    cfg = resolve_schedule(cfg, train_source.n_train if streamed else len(splits["train"]))
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
        open_run_dir(rd, resume, overwrite)
        write_setup(rd, cfg, prep, splits, device)
        logger = RunLogger(rd, cfg.log.tensorboard, cfg.log.wandb, cfg.log.wandb_project,
                           cfg.log.wandb_mode, cfg.to_dict(), cfg.log.every_steps)
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
    trained = tuple(n for n in PHASES
                    if n in trainer.results or (rd is not None and (rd / PHASES[n].checkpoint).is_file()))
    run = Run(cfg, model, prep, splits, data, rd, trainer, trained, fit_seconds=fit_seconds, imputed=imputed,
              phase_counts={n: (r.steps, r.epochs) for n, r in trainer.results.items()})
    if rd is not None and ctx.is_main:
        write_history(rd, trainer.results, imputed, fit_seconds)
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
