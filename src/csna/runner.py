"""A whole run: data → split → preprocessing → model → four phases → run directory.

The CLI and ``CSNAEstimator`` both go through here, so a run made by one is read by the other.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import checkpoint as ckpt
from .config import Config, ConfigError, config_from_dict, dump_config
from .data import CausalData, DataError, Preprocessor, ihdp, load_table, split_indices, synthetic
from .logger import RunLogger
from .model import CSNAModel
from .phases import PHASES
from .train import Split, Trainer, set_seed

PREPROCESS_FILE = "preprocess.json"
SPLITS_FILE = "splits.json"


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
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
                      covariates=d.covariates or None, outcome_type=d.outcome_type)


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
        """(n, p_out) float32 features, with the training medians filled in when imputing."""
        if self.impute:
            X = X.fillna({c: v for c, v in self.impute.items() if c in X.columns})
        return self.pre.transform(X)


def fit_preparation(cfg: Config, data: CausalData, train_idx: np.ndarray) -> Prepared:
    Xtr = data.X.iloc[train_idx]
    impute: dict[str, float] = {}
    if cfg.data.impute:
        num = Xtr.select_dtypes(include="number")
        impute = {c: float(num[c].median()) for c in num.columns if data.X[c].isna().any()}
    pre = Preprocessor().fit(Xtr.fillna(impute) if impute else Xtr)
    if data.outcome_type == "continuous":
        y = data.Y[train_idx].astype(np.float64)
        y_mean, y_std = (float(y.mean()), float(y.std()) or 1.0) if cfg.train.standardize_outcome else (0.0, 1.0)
        n_classes = 0
    else:
        y_mean, y_std = 0.0, 1.0
        n_classes = max(2, int(data.Y.max()) + 1)
    return Prepared(pre, data.outcome_type, data.n_treatments, n_classes, y_mean, y_std, impute)


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

    @property
    def gated(self) -> bool:
        return 4 in self.phases_trained


def split_data(cfg: Config, data: CausalData) -> dict[str, np.ndarray]:
    seed = cfg.data.split_seed if cfg.data.split_seed >= 0 else cfg.train.seed
    if data.extra.get("split") is not None:  # a fixed split shipped with the data
        tr, va, te = data.extra["split"]
    else:
        tr, va, te = split_indices(data.n, tuple(cfg.data.split), seed=seed, stratify=data.T)
    return {"train": np.asarray(tr), "val": np.asarray(va), "test": np.asarray(te)}


def completed_phases(run_dir: Path) -> list[int]:
    return [n for n, ph in PHASES.items() if (run_dir / ph.checkpoint).is_file()]


def train_run(cfg: Config, data: CausalData | None = None, run_dir: str | Path | None = None,
              progress: bool = False, splits: dict[str, np.ndarray] | None = None,
              resume: bool = False) -> Run:
    """Train all four phases and, with ``run_dir``, write the run directory (design §7).

    With ``resume``, the phases whose checkpoints exist in ``run_dir`` are loaded, not
    retrained; the split and preprocessing are read back from the run directory.
    """
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    set_seed(cfg.train.seed)
    device = select_device(cfg.train.device)
    data = data if data is not None else load_data(cfg)
    rd = Path(run_dir) if run_dir is not None else None
    done: list[int] = []
    if resume and rd is not None:
        done = completed_phases(rd)
        if (rd / SPLITS_FILE).is_file():
            splits = {k: np.asarray(v, dtype=np.int64) for k, v in json.loads((rd / SPLITS_FILE).read_text()).items()}
    splits = splits or split_data(cfg, data)
    if len(splits["train"]) < 4 or len(splits["val"]) < 2:
        raise DataError(f"too few rows for the splits: {data.n} rows give {len(splits['train'])} train / "
                        f"{len(splits['val'])} validation")
    if len(np.unique(data.T[splits["train"]])) < data.n_treatments:
        raise DataError("the training split lacks a treatment group; more rows or another split seed are needed")
    prep = fit_preparation(cfg, data, splits["train"])
    set_seed(cfg.train.seed)
    model = build_model(prep, cfg, device)
    if done:
        state = ckpt.load(rd / PHASES[max(done)].checkpoint, map_location=device)
        try:
            model.load_state_dict(state["model_state"], strict=True)
        except RuntimeError as exc:
            raise ckpt.CheckpointError(f"{rd / PHASES[max(done)].checkpoint} does not match this data and config: "
                                       f"{str(exc).splitlines()[0]}") from None
    meta = {"features": list(prep.pre.feature_names_), "covariates": list(prep.pre.input_columns_),
            "n_treatments": prep.n_treatments, "n_classes": prep.n_classes,
            "outcome_type": prep.outcome_type, "data": data.name}
    logger = RunLogger(None)
    if rd is not None:
        rd.mkdir(parents=True, exist_ok=True)
        dump_config(cfg, rd / "config.yaml")
        (rd / "env.json").write_text(json.dumps(environment(cfg, device), indent=2))
        (rd / PREPROCESS_FILE).write_text(json.dumps(prep.to_dict(), indent=2))
        (rd / SPLITS_FILE).write_text(json.dumps({k: v.tolist() for k, v in splits.items()}))
        logger = RunLogger(rd, cfg.log.tensorboard, cfg.log.wandb, cfg.log.wandb_project,
                           cfg.log.wandb_mode, cfg.to_dict())
    bar = _progress_factory() if progress else None
    trainer = Trainer(model, cfg, to_split(prep, data, splits["train"], device),
                      to_split(prep, data, splits["val"], device), rd, logger, meta, bar)
    t0 = time.perf_counter()
    try:
        trainer.fit(tuple(n for n in PHASES if n > max(done, default=0)))
    finally:
        logger.close()
    fit_seconds = time.perf_counter() - t0
    model.eval()
    trained = tuple(sorted(set(done) | set(trainer.results)))
    run = Run(cfg, model, prep, splits, data, rd, trainer, trained)
    if rd is not None:
        history = {str(k): v.history for k, v in trainer.results.items()}
        (rd / "history.json").write_text(json.dumps({"phases": history, "time_fit_s": fit_seconds}, indent=2))
    run.fit_seconds = fit_seconds  # type: ignore[attr-defined]
    return run


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
    return Run(cfg, model, prep, splits, None, rd, None, tuple(found))


def _progress_factory():
    """A tqdm bar per phase with the running loss."""
    from tqdm import tqdm

    def make(total: int, desc: str):
        bar = tqdm(total=total, desc=desc, leave=True, dynamic_ncols=True, file=sys.stderr)
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
