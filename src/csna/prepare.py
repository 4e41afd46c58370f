"""From data to tensors: the split, the preprocessing fitted on the training rows, the
tensors on the training device, and the model those shapes build.

Everything here is fitted on (or checked against) the training part only, so a run's
preprocessing is what the rows it was trained on say.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import streaming
from .config import Config, ConfigError
from .splits import base_split_seed, split_seed
from .propensity import CROSSFIT_ROWS, Propensity, fit_propensity
from .data import CausalData, DataError, Preprocessor, ihdp, load_table, split_indices, synthetic
from .model import CSNAModel
from .node_groups import group_variables, grouped_nodes
from .nn.variables import column_nodes
from .sources import Split


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
    # ê(x) on the features, fitted on the training rows (csna.propensity): the out-of-sample
    # weights of kl_do_ipw on the test rows. None in runs saved before it existed.
    propensity: Propensity | None = None
    # Variable nodes on a table wider than model.max_variable_nodes: the variables of each node
    # (csna.node_groups), chosen on the training rows. None: one node per variable.
    node_groups: list[list[int]] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"preprocessor": self.pre.to_dict(), "outcome_type": self.outcome_type,
               "n_treatments": self.n_treatments, "n_classes": self.n_classes,
               "y_mean": self.y_mean, "y_std": self.y_std, "impute": self.impute}
        if self.propensity is not None:
            out["propensity"] = self.propensity.to_dict()
        if self.node_groups is not None:
            out["node_groups"] = self.node_groups
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Prepared":
        prop = Propensity.from_dict(d["propensity"]) if d.get("propensity") else None
        groups = [[int(j) for j in g] for g in d["node_groups"]] if d.get("node_groups") else None
        return cls(Preprocessor.from_dict(d["preprocessor"]), d["outcome_type"], int(d["n_treatments"]),
                   int(d["n_classes"]), float(d["y_mean"]), float(d["y_std"]), dict(d.get("impute", {})), prop,
                   groups)

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
    pre = Preprocessor(cfg.data.numeric_scaling, cfg.data.clip_sd).fit(Xtr.fillna(impute) if impute else Xtr)
    if data.outcome_type == "continuous":
        y = data.Y[train_idx].astype(np.float64)
        y_mean, y_std = (float(y.mean()), float(y.std()) or 1.0) if cfg.train.standardize_outcome else (0.0, 1.0)
        n_classes = 0
    else:
        y_mean, y_std = 0.0, 1.0
        n_classes = max(2, int(data.Y.max()) + 1)
    prep = Prepared(pre, data.outcome_type, data.n_treatments, n_classes, y_mean, y_std, impute)
    # On at most CROSSFIT_ROWS seeded random training rows: plenty for a logistic model, and no
    # float64 copy of a huge feature matrix.
    sub = np.arange(len(train_idx))
    if len(sub) > CROSSFIT_ROWS:
        sub = np.sort(np.random.default_rng(cfg.train.seed).choice(len(sub), CROSSFIT_ROWS, replace=False))
    feats = prep.features(Xtr.iloc[sub])
    prep.propensity = fit_propensity(feats, data.T[train_idx[sub]].astype(np.int64), data.n_treatments)
    cap = cfg.model.max_variable_nodes
    if cfg.model.nodes == "variables" and cap:
        names, col_node = column_nodes(pre.to_dict()["columns"])
        if len(names) > cap:
            prep.node_groups = group_variables(feats, col_node, len(names), cap, cfg.train.seed)
    return prep


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
    variables, members = None, None
    if cfg.model.nodes == "variables":
        names, col_node = column_nodes(prep.pre.to_dict()["columns"])
        if prep.node_groups is not None:  # a table wider than model.max_variable_nodes
            names, col_node, members = grouped_nodes(names, col_node, prep.node_groups)
        variables = (names + [cfg.data.treatment, cfg.data.outcome], col_node)
    model = CSNAModel(len(prep.pre.feature_names_), prep.n_treatments, prep.n_classes, cfg.model, variables)
    if members is not None:
        model.node_members = members
    model.y_mean.fill_(prep.y_mean)
    model.y_std.fill_(prep.y_std)
    return model.to(device)


def split_data(cfg: Config, data: CausalData) -> dict[str, np.ndarray]:
    """Train / validation / test row indices (``data.split`` shares, stratified by treatment),
    seeded by ``config.split_seed``: one split per replication of a built-in benchmark."""
    seed = split_seed(cfg)
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


def prepare_stream(cfg: Config, device: torch.device, prep: Prepared | None = None):
    """(evaluation data, its split, preprocessing, training batch source, rows in the file) of
    a streamed table (``csna.streaming``)."""
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
    seed = base_split_seed(cfg)  # a streamed user table: the seed streaming.scan uses
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
