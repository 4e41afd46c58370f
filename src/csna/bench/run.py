"""Running a benchmark: one split per replication, every estimator on it, in parallel.

The parent draws each replication's split once (``csna.prepare.split_data`` with the default
config, so csna's own split) and hands the same indices to every task; a task is one estimator
on one replication, run in a worker process with one torch and one BLAS thread.
"""

from __future__ import annotations

import hashlib
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..config import Config, ConfigError, ablation_dir, load_config, parse_override
from ..data import CausalData, ihdp, synthetic
from ..perf import tune_malloc

ABLATIONS = ("single", "phase1-only", "no-lattice", "sequence-rope", "no-rope", "lambda1-0.5", "no-reg", "gates-off",
             "z-norm")
ABLATION_DIR = ablation_dir()  # packaged with csna, so `pip install .` has them


@dataclass(frozen=True)
class BenchSpec:
    """What ``csna bench`` runs."""

    dataset: str  # ihdp | synthetic
    replications: tuple[int, ...]
    peers: tuple[str, ...] = ()
    csna: bool = True
    ablations: tuple[str, ...] = ()
    ablation_reps: int | None = None  # ablations on the first k replications only
    overrides: tuple[str, ...] = ()  # csna --set KEY=VALUE (ablations too)
    n: int = 2000  # synthetic rows
    p: int = 25  # synthetic covariates
    peer_options: dict[str, Any] = field(default_factory=dict)  # neural: max_epochs, n_configs
    cores: int = 1  # CPU cores one fit may use: csna's ensemble members train in that many processes
    cell: Any = None  # dataset "suite": a stress-suite cell (csna.bench.suite.Cell), read as a user's table


@dataclass(frozen=True)
class Task:
    spec: BenchSpec
    replication: int
    estimator: str  # "csna", "csna-<ablation>" or a peer name
    splits: dict[str, list[int]]
    companion: str | None = None  # an ensembled peer's task also scores its member 0 as this single peer


def ablation_path(name: str, directory: Path | None = None) -> Path:
    path = (directory or ABLATION_DIR) / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"ablation config not found: {path} (valid: {', '.join(ABLATIONS)})")
    return path


def load_data(spec: BenchSpec, rep: int) -> CausalData:
    if spec.cell is not None:
        return spec.cell.data(rep)
    if spec.dataset == "ihdp":
        return ihdp(rep)
    return synthetic(spec.n, spec.p, seed=rep, outcome="binary")


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in values.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def csna_config(spec: BenchSpec, rep: int, path: Path | None = None) -> Config:
    """The default config for this replication with the ``--set`` overrides and, for an
    ablation, its file's keys applied last: what the ablation switches off stays off whatever
    budget ``--set`` gives."""
    if spec.cell is not None:  # a user's table: its missing values imputed
        base = ["data.impute=true"] if spec.cell.knobs.missing > 0 else []
    elif spec.dataset == "ihdp":
        base = [f"data.replication={rep}"]
    else:
        base = ["data.source=synthetic", f"data.synthetic_seed={rep}", "data.synthetic_outcome=binary",
                f"data.synthetic_n={spec.n}", f"data.synthetic_p={spec.p}"]
    items = dict(parse_override(o) for o in base + ["train.progress=false", f"train.ensemble_workers={spec.cores}"]
                 + list(spec.overrides))
    if path is not None:
        load_config(path)  # the file on its own must be a valid config
        items.update(_flatten(yaml.safe_load(path.read_text()) or {}))
    return load_config(None, items, data_source=spec.cell.source if spec.cell is not None else None)


def draw_splits(spec: BenchSpec, rep: int) -> dict[str, list[int]]:
    """csna's own split of replication ``rep``, checked, as plain lists (cheap to send)."""
    from ..prepare import check_splits, split_data

    data = load_data(spec, rep)
    splits = split_data(csna_config(spec, rep), data)
    check_splits(data, splits)
    return {k: v.tolist() for k, v in splits.items()}


def split_id(test: np.ndarray) -> str:
    """A short fingerprint of the test rows an estimator was scored on."""
    return hashlib.sha1(np.sort(np.asarray(test, dtype=np.int64)).tobytes()).hexdigest()[:10]


def tasks_for(spec: BenchSpec, splits: dict[int, dict[str, list[int]]]) -> list[Task]:
    out: list[Task] = []
    for i, rep in enumerate(spec.replications):
        names = (["csna"] if spec.csna else [])
        if spec.ablation_reps is None or i < spec.ablation_reps:
            names += [f"csna-{a}" for a in spec.ablations]
        names += list(spec.peers)
        out += [Task(spec, rep, name, splits[rep]) for name in names]
    return out


def pair_singles(tasks: list[Task]) -> list[Task]:
    """Drop each single neural peer's task whose ensembled peer runs on the same table and
    replication, and have that ensemble's task score its member 0 as the single peer: member 0
    *is* the single peer (``neural_ens``), so the rows are the same at less cost."""
    from dataclasses import replace

    from .peers import ENSEMBLED, SINGLE_OF

    def key(t: Task, name: str) -> tuple:
        return (getattr(t.spec.cell, "name", None), t.spec.dataset, t.replication, name)

    present = {key(t, t.estimator) for t in tasks}
    out = []
    for t in tasks:
        if t.estimator in ENSEMBLED and key(t, ENSEMBLED[t.estimator]) in present:
            continue
        single = SINGLE_OF.get(t.estimator)
        out.append(replace(t, companion=single) if single and key(t, single) in present else t)
    return out


def _fit_csna(task: Task, data: CausalData, splits: dict[str, np.ndarray]) -> tuple[dict[str, float], np.ndarray]:
    from ..ensemble import train_run
    from ..evaluate import core_metrics, split_indices_of
    from ..fit_flops import fit_flops

    name = task.estimator
    path = ablation_path(name[len("csna-"):]) if name.startswith("csna-") else None
    cfg = csna_config(task.spec, task.replication, path)
    run = train_run(cfg, data=data, splits=splits)
    m = core_metrics(run, data)
    keys = ["sqrt_pehe_in", "sqrt_pehe_out", "eps_ate_in", "eps_ate_out"]
    keys += [k for k in ("eps_att_in", "eps_att_out") if k in m]
    if data.outcome_type == "binary":
        keys.append("auc_out")
        m["auc_out"] = m.get("auc_out", float("nan"))
    row = {k: float(m[k]) for k in keys}
    row["flops_fit"] = fit_flops(run, data)  # counted after the fit, as the neural peers' are
    test = split_indices_of(run, data)["test"]
    row.update(interval_columns(run, data, test))
    return row, test


def interval_columns(run, data: CausalData, test: np.ndarray) -> dict[str, float]:
    """The doubly-robust ATE / ATT with standard errors, whether their 95% intervals hold the
    truth (1/0), and the share of test rows whose pointwise 95% interval holds τ(x)
    (``csna.inference``): what ``benchmarks/RESULTS.md``'s coverage tables count."""
    from ..dr import dr_effects
    from ..inference import effect_stderr
    from ..predict import predict_features

    out: dict[str, float] = {}
    if data.n_treatments != 2 or data.mu is None:
        return out
    dr = dr_effects(run, data)
    for k in ("ate_dr", "ate_dr_se", "att_dr", "att_dr_se", "eps_ate_dr", "eps_att_dr"):
        out[k] = float("nan") if dr.get(k) is None else float(dr[k])
    for a in ("ate", "att"):
        out[f"{a}_dr_covered"] = float(out[f"eps_{a}_dr"] <= 1.959964 * out[f"{a}_dr_se"])
    if len(test):
        x = run.prep.features(data.X.iloc[test])
        mu = predict_features(run, x)["mu"]
        se = effect_stderr(run, x)
        err = np.abs((mu[:, 1] - mu[:, 0]) - (data.mu[test, 1] - data.mu[test, 0]))
        ok = np.isfinite(se).all()  # one member: no spread, no interval
        out["cate_covered_out"] = float(np.mean(err <= 1.959964 * se)) if ok else float("nan")
        out["cate_se_out"] = float(np.mean(se)) if ok else float("nan")
    return out


def _fit_peer(task: Task, data: CausalData, splits: dict[str, np.ndarray]) -> tuple[dict[str, float], np.ndarray]:
    """The peer's metrics; with ``task.companion``, also its member 0's under the key "companion"
    (metrics and "fit_seconds")."""
    from ..prepare import fit_preparation
    from .peers import fit_peer, score

    cfg = csna_config(task.spec, task.replication)
    x = fit_preparation(cfg, data, splits["train"]).features(data.X).astype(np.float64)  # (n, p_out)
    binary = data.outcome_type == "binary"
    # An ensembled peer's members share these features (fitted on the first member's training
    # rows) and redraw their splits as csna's members do (train.ensemble_resplit).
    pred = fit_peer(task.estimator, x, data.T, data.Y, splits, binary, seed=task.replication,
                    options={"resplit": cfg.train.ensemble_resplit, **task.spec.peer_options})
    idx_in = np.sort(np.concatenate([splits["train"], splits["val"]]))
    m: dict[str, Any] = score(pred.tau, pred.mu, data.mu, data.T, data.Y, idx_in, splits["test"], binary)
    if pred.flops is not None:
        m["flops_fit"] = float(pred.flops)
    if task.companion is not None:
        first, secs = pred.first_member
        c = score(first.tau, first.mu, data.mu, data.T, data.Y, idx_in, splits["test"], binary)
        m["companion"] = {**c, "flops_fit": float(first.flops), "fit_seconds": secs}
    return m, splits["test"]


def run_task(task: Task) -> dict[str, Any]:
    """One estimator on one replication → one results row (or an ``error`` row)."""
    import torch
    from threadpoolctl import threadpool_limits

    tune_malloc()
    torch.set_num_threads(1)
    row: dict[str, Any] = {"estimator": task.estimator, "replication": task.replication}
    if task.spec.cell is not None:
        row["cell"] = task.spec.cell.name
    try:
        with threadpool_limits(1):
            data = load_data(task.spec, task.replication)
            splits = {k: np.asarray(v, dtype=np.int64) for k, v in task.splits.items()}
            fit = _fit_csna if task.estimator == "csna" or task.estimator.startswith("csna-") else _fit_peer
            t0 = time.perf_counter()
            metrics, test = fit(task, data, splits)
            companion = metrics.pop("companion", None)
            row.update(metrics)
            row["fit_seconds"] = time.perf_counter() - t0
            row["split_id"] = split_id(test)
            if companion is not None:  # the single peer, scored from the ensemble's member 0
                row["companions"] = [{**{k: v for k, v in row.items() if k in ("cell", "replication", "split_id")},
                                      "estimator": task.companion, **companion}]
    except Exception as exc:  # one failing fit must not lose a long run: reported, not written
        row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        row["traceback"] = traceback.format_exc()
        if task.companion is not None:  # its row was to come from this fit: it failed too
            row["companions"] = [{**row, "estimator": task.companion}]
    return row


def execute(tasks: list[Task], jobs: int = 1, progress: bool = True, on_row=None) -> list[dict[str, Any]]:
    """Run ``tasks`` (in ``jobs`` spawned worker processes when > 1) with a progress bar.

    ``on_row(row)`` is called in the parent as each task finishes (to save results as they come).
    """
    from tqdm import tqdm

    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(tasks), desc="bench", unit="fit", disable=not progress, file=sys.stderr,
               dynamic_ncols=True)

    def done(row: dict[str, Any]) -> None:
        for r in [row, *row.pop("companions", [])]:
            rows.append(r)
            if on_row is not None:
                on_row(r)
        bar.set_postfix_str(f"{row['estimator']}@{row['replication']}" + (" FAILED" if "error" in row else ""))
        bar.update(1)

    try:
        if jobs <= 1:
            for t in tasks:
                done(run_task(t))
        else:
            import multiprocessing as mp

            # spawn: a forked child of a process that has started torch's thread pools can hang.
            with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
                futures = [pool.submit(run_task, t) for t in tasks]
                for fut in as_completed(futures):
                    done(fut.result())
    finally:
        bar.close()
    return rows


def add_run_options(p, outputs: str) -> None:
    """The options every bench that runs fits shares (``csna bench ihdp|synthetic|suite``):
    the neural peers' budget, the output directory holding ``outputs``, resume/overwrite, quiet."""
    p.add_argument("--neural-epochs", type=int, default=None, help="cap the neural peers' epochs (quick looks)")
    p.add_argument("--neural-configs", type=int, default=None, help="try only the first K configs of each neural grid")
    p.add_argument("--out", required=True, help=f"output directory ({outputs})")
    p.add_argument("--resume", action="store_true", help="keep the rows in --out and run only the missing ones")
    p.add_argument("--overwrite", action="store_true", help="replace results in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
