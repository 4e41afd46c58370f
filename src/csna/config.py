"""Configuration: dataclasses, YAML loading and ``--set`` overrides.

Keys are strict: an unknown key or a value of the wrong type raises ``ConfigError``
naming the key (and the nearest valid one), so a typo never silently falls back to
a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .config_checks import VALID, ConfigError, validate  # noqa: F401 (re-exported)


@dataclass
class DataConfig:
    source: str = "ihdp"  # ihdp | synthetic | path to a CSV / Parquet table
    replication: int = 0  # IHDP replication (seeds response surface B)
    treatment: str = "treatment"  # column names for user tables
    outcome: str = "outcome"
    covariates: list[str] = field(default_factory=list)  # empty: every other column
    outcome_type: str = "auto"  # auto | continuous | binary | multiclass
    split: list[float] = field(default_factory=lambda: [0.63, 0.27, 0.10])
    split_seed: int = -1  # -1: use train.seed
    impute: bool = False  # fill NaN covariates with training medians instead of failing
    # Continuous covariates into the network: "standard" (x − mean) / sd, or "quantile", the normal
    # scores of their training ranks (scikit-learn's QuantileTransformer, as tabular deep learning
    # commonly preprocesses; Gorishniy et al. 2021): skewed columns and outliers squashed; "auto",
    # quantile for columns with |training skewness| > 2 (csna.data.prep.SKEW_QUANTILE), standard otherwise
    numeric_scaling: str = "standard"
    # A standardised covariate is clipped to ± clip_sd training standard deviations, in training
    # and at prediction (0: not clipped), so that a network does not extrapolate linearly from
    # outliers and from rows beyond the training range (csna.data.prep.Preprocessor)
    clip_sd: float = 0.0
    stream: bool = False  # read a CSV / Parquet table chunk by chunk (bounded memory) instead of loading it
    stream_fit_rows: int = 100000  # streamed: training rows the preprocessing and outcome scaling are fitted on
    stream_eval_rows: int = 20000  # streamed: validation and test rows kept in memory (each) for selection and metrics
    shuffle_rows: int = 262144  # streamed: rows of the shuffle buffer
    workers: int = 0  # streamed: DataLoader worker processes reading ahead (0: read in the training process)
    synthetic_n: int = 2000
    synthetic_p: int = 25
    synthetic_outcome: str = "continuous"
    synthetic_seed: int = 0


@dataclass
class ModelConfig:
    k: int = 8  # latent causal nodes
    d: int = 32  # node width
    hidden: int = 256  # encoder trunk width
    encoder_layers: int = 2
    lattice_layers: int = 2
    attention_blocks: int = 2
    heads: int = 4
    mlp_ratio: int = 2
    head_hidden: int = 128  # width of the outcome heads
    dropout: float = 0.0
    tau: float = 0.1  # soft threshold of the adjacency
    edge_eps: float = 0.25  # A_ij > edge_eps (dominant direction) counts as an edge for causal distance
    d_max: int = 3  # clip of f(d_causal)
    rope_base: float = 10000.0
    positional: str = "causal"  # causal | sequence | none
    use_lattice: bool = True
    utility_hidden: int = 32
    # LayerNorm each latent node z_i (design §3.1). Off: the norm discards each node's scale; on
    # IHDP tuning replications 1000-1039 √PEHE_out was 0.938 with it, 0.782 without (RESULTS.md).
    z_norm: bool = False
    # What the outcome heads read: "mean" of the nodes, or "nodes", every node's vector side by
    # side (k·d), so the pattern of the attention reaches the prediction (issue 19, Session 22)
    readout: str = "mean"
    # latent: k anonymous nodes from an MLP; variables: one node per input variable plus a treatment
    # and an outcome node, the graph learned among them by phase 2's structure score (csna.nn.structure)
    nodes: str = "latent"
    # variables only: a table with more input variables than this gets that many nodes at most,
    # correlated variables sharing one (csna.node_groups); attention, causal RoPE and the structure
    # score grow with the square of the nodes and PC faster still. 0: one node per variable always
    max_variable_nodes: int = 32
    # variables only: "graph" feeds the outcome pathway only the columns of the optimal adjustment
    # set that phase 2's DAG implies (csna.nn.structure.adjustment_set); "all" feeds every column
    adjust: str = "all"
    # Latent nodes only: the encoder also reads the log-odds of the model's own propensity head
    # (detached), as BCF's prognostic function reads π̂(x) (Hahn et al. 2020): under targeted
    # selection the direction of x that predicts treatment is the one a regularised outcome fit
    # underfits, which leaves part of the confounded association in τ̂.
    propensity_feature: bool = False
    # Weight of a cross-entropy that a linear propensity head on the pooled representation adds
    # to the training loss (DragonNet, Shi et al. 2019): the representation must keep what
    # predicts treatment, the confounders among it. 0 = no such head. Its output is never used
    # as ê (the propensity head on the covariates is).
    propensity_rep: float = 0.0
    # μ̂_t(x) = g(rep) + h_t(rep): a prognostic head g shared by every arm, fitted on all rows, plus
    # one head per arm (Curth & van der Schaar 2021). An arm's own head fits the x → y slope from
    # its rows alone and pulls its counterfactual towards its arm's mean; g learns it from both.
    shared_head: bool = False


@dataclass
class PhaseConfig:
    # -1: from ``steps`` and the table's training rows (csna.schedule); 0 skips the phase
    epochs: int = -1
    steps: int = 320  # optimizer steps at 500 training rows, when epochs is -1 (csna.schedule)
    min_epochs: int = 1
    lr: float = 5e-4
    warmup_steps: int = 50
    warmup_max_fraction: float = 0.1  # on small data warm-up is capped at this fraction of the phase
    scheduler: str = "cosine"  # cosine | plateau | none
    # L_causal's weight, 0 in every phase (the seed's λ1 0.3–0.7 is an option): on 105 tuning
    # fits the seed's 0.5 made ε_ATE_out 1.29× (2.5 s.e.) that of 0, by the rule fixed in advance
    # (benchmarks/RESULTS.md, Session 13). The term is still computed and logged.
    lambda_causal: float = 0.0
    lambda_geometric: float = 0.0
    lambda_dc: float = 0.0
    lambda_dis: float = 0.0
    lambda_stable: float = 0.0
    lambda_schedule: str = "constant"  # constant | linear | cosine (ramp over the warm-up)
    early_stopping_patience: int = 0  # 0: keep the best validation epoch, never stop early


@dataclass
class Phase1Config(PhaseConfig):
    steps: int = 480
    min_epochs: int = 30
    lr: float = 1e-3
    z_tolerance: float = 0.02  # relative change of mean/cov of z on the probe batch


@dataclass
class Phase2Config(PhaseConfig):
    lambda_geometric: float = 0.25
    # model.nodes = variables only: the structure score's weight, its L1 on A, the weight of
    # h(A) growing geometrically from dag_start to dag_end, and the edge threshold of the DAG
    # projected at the end of the phase (csna.nn.structure)
    lambda_structure: float = 1.0
    lambda_sparse: float = 0.02
    dag_start: float = 0.01
    dag_end: float = 10.0
    edge_threshold: float = 0.1
    skeleton: str = "pc"  # pc: only the pairs the PC algorithm leaves adjacent may be joined (csna.skeleton); none


@dataclass
class FullLossPhaseConfig(PhaseConfig):
    """Phases 3 and 4 run the whole model under the full L_total."""

    lr: float = 2.5e-4
    lambda_geometric: float = 0.25
    lambda_dc: float = 0.2
    # Off by default (seed: 0.5): MMD balancing removes from the representation what predicts
    # treatment, confounders included; on the stress suite's tuning seeds it did not pay
    # (benchmarks/RESULTS.md, Session 8). Still available, or as CFR-Wass's balance.
    lambda_dis: float = 0.0
    lambda_stable: float = 0.3
    stable_every: int = 1  # compute L_Stable every N steps (scaled by N when on)


@dataclass
class Phase3Config(FullLossPhaseConfig):
    theta_learnable_from: float = 0.5  # fraction of the phase after which θ0, w train
    # stochastic depth: per-sample probability of skipping a block, so the backbone works with
    # the blocks phase 4 learns to skip
    block_drop: float = 0.3


@dataclass
class Phase4Config(FullLossPhaseConfig):
    lr: float = 1e-3
    warmup_steps: int = 20
    # lr is the actor's learning rate (and the backbone's when finetune_backbone is on)
    eta: float = 0.05  # price of running every block, in phase4.loss_unit
    # keep only controllers that move the validation rows' average effect by at most this
    # (standardised outcome units, or probability)
    ate_tolerance: float = 0.03
    cf_weight: float = 1.0  # weight of the counterfactual arms' drift from the full model in the reward and the guard
    # the loss η and loss_tolerance are priced in: the full model's mean training ("train") or
    # validation ("val") loss, or the outcome's variance / class entropy ("outcome")
    loss_unit: str = "outcome"
    loss_tolerance: float = 0.02  # keep only controllers whose gated validation loss is within this of the full model's
    # keep only controllers that move the individual effects τ̂(x) (validation rows and up to
    # CATE_ROWS training rows; no outcome used) by an RMS of at most this fraction of the full
    # model's own validation error (factual RMSE; √Brier for classes). 0 switches it off.
    cate_tolerance: float = 0.3
    entropy_beta: float = 0.01
    collapse_entropy: float = 0.02  # warn when the utilities' mean binary entropy (bits) falls below this
    critic_lr: float = 1e-3
    finetune_backbone: bool = False


@dataclass
class TrainConfig:
    seed: int = 42
    batch_size: int = 64
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.999
    grad_clip: float = 1.0
    max_bad_batches: int = 20  # consecutive NaN/Inf batches before stopping
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    deterministic: bool = False
    # torch intra-op threads; 0 = torch default. One is fastest for this model's small matmuls
    # (2 threads were 6x slower per step here)
    threads: int = 1
    checkpoint_every: int = 200  # steps between latest-state checkpoints; 0 = at each epoch end
    max_steps: int = 0  # 0 = no cap (per phase)
    standardize_outcome: bool = True
    progress: bool = True
    # Training forward/backward under torch.autocast: "bf16" (matmuls in bfloat16; fastest on
    # CUDA) or "fp32". Evaluation and prediction always run in fp32.
    precision: str = "fp32"
    # L_Dis between treatment groups' pooled representations: multi-bandwidth MMD² ("mmd") or
    # the Sinkhorn estimate of the Wasserstein distance ("wasserstein", CFR-Wass's balance).
    discrepancy: str = "mmd"
    # L_causal's reference for P(Y|do(t)) (csna.losses.causal_kl): "ipw", the observed outcomes
    # reweighted by P(T = t)/ê_t(x); "aipw", the model's moments plus the reweighted factual
    # residuals (doubly robust: its error is a product of the propensity's and the model's). With
    # L_causal on (λ 0.5), aipw's √PEHE_out was 0.91× ipw's on 22 tuning fits (Session 13).
    causal_reference: str = "aipw"
    # Weigh the factual loss by 1 / (K·share of the received treatment), so a small arm (19%
    # treated on IHDP) counts as much as a large one, as TARNet and CFR do.
    balance_arms: bool = False
    # Weigh each row's factual loss by its stabilised inverse-propensity weight P(T = t)/ê_t(x)
    # (the cross-fitted logistic ê of L_causal's reference, clipped to [0.1, 10]): "ipw" fits each
    # arm's head as if its rows covered the whole population, so μ̂_0 is fitted where the treated
    # are (importance-weighted factual loss, Hassanpour & Greiner 2019); "none" (the default).
    factual_weights: str = "none"
    # Weight of L_effect, the batch variance of τ̂(x) (csna.losses.effect_variance), in phases 1–3:
    # the prior that the effect is simpler than the outcome, so a counterfactual prediction far
    # from its arm's data follows the other arm's trend. 0 = off.
    effect_smoothing: float = 0.0
    # Members of an ensemble: the run trains this many models (seeds seed, seed+1, …; the
    # members after the first in run_dir/members/<j>/) and predicts with their mean, at M
    # times the training and prediction cost. On IHDP tuning replications 1000-1019, three
    # members took sqrt-PEHE_out from 0.776 (one model) to 0.723 with seeds alone and to 0.690
    # with ensemble_resplit, four to 0.633, five to 0.626 (benchmarks/RESULTS.md). Four train
    # in two rounds on two cores, as three do.
    ensemble: int = 4
    # Each member after the first also redraws the train / validation partition of the rows
    # that are not test rows (stratified by treatment), so the members together learn from all
    # of them and differ by more than their seed.
    ensemble_resplit: bool = True
    # Processes that train the members at once (each with train.threads torch threads): 0 = as
    # many as there are members and CPU cores, 1 = one after another. Same results either way.
    ensemble_workers: int = 0
    # After training, scale τ̂(x) about its mean by the λ in [0, 1] that the R-loss of the rows
    # held out from the members picks, and move its level to the R-loss level where the held-out
    # rows reject the plug-in one (csna.shrink, docs/effect_shrinkage.md); "scale": λ only;
    # "none" keeps τ̂.
    effect_shrink: str = "rloss"
    # The shrinkage's outcome nuisance m̂(x) = E[Y | x] (csna.shrink.outcome_arms): "select" the
    # one of lower held-out squared error between the arms' ê μ̂1 + (1 − ê) μ̂0 and a cross-fitted
    # LightGBM regression of y on x; "ensemble" or "direct" always that one.
    shrink_outcome: str = "select"
    # Multiply the tested λ by the reliability ratio of the held-out τ̂ to the whole ensemble's
    # (csna.shrink.reliability_factor: λ is fitted on the held-out τ̂ of about one member, which
    # is noisier than the mean of all of them). Off: on fresh tuning fits it overshot
    # (benchmarks/RESULTS.md, Session 17).
    shrink_reliability: bool = False
    # The shrinkage's level (csna.shrink.shrink_rule): "test" keeps the plug-in level unless the
    # R-loss level rejects it at 2 standard errors; "blend" combines the two by their precision
    # (csna.shrink.blend_level; Session 18's candidate, benchmarks/RESULTS.md).
    shrink_level: str = "test"


@dataclass
class LogConfig:
    tensorboard: bool = True
    # Per-step training scalars go to the loggers every this many steps (epoch-level ones every
    # epoch): TensorBoard's writer checksums each event in pure Python on a background thread,
    # which cost 5 s of a 39 s fit when every step was written (RunLogger.step_scalars).
    every_steps: int = 10
    wandb: bool = False
    wandb_project: str = "csna"
    wandb_mode: str = "offline"


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    phase1: Phase1Config = field(default_factory=Phase1Config)
    phase2: Phase2Config = field(default_factory=Phase2Config)
    phase3: Phase3Config = field(default_factory=Phase3Config)
    phase4: Phase4Config = field(default_factory=Phase4Config)
    log: LogConfig = field(default_factory=LogConfig)

    def phase(self, n: int) -> PhaseConfig:
        return getattr(self, f"phase{n}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, typ: Any, key: str) -> Any:
    """Check ``value`` against the annotated type; ints are accepted for floats."""
    origin = typing.get_origin(typ)
    if origin in (list,):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        (inner,) = typing.get_args(typ)
        return [_coerce(v, inner, key) for v in value]
    if origin in (typing.Union, types.UnionType):
        for t in typing.get_args(typ):
            try:
                return _coerce(value, t, key)
            except ConfigError:
                pass
        raise ConfigError(f"config key '{key}' has the wrong type: {value!r}")
    if typ is bool:
        if isinstance(value, bool):
            return value
    elif typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif typ is str:
        if isinstance(value, str):
            return value
    else:
        return value
    raise ConfigError(
        f"config key '{key}' must be {typ.__name__}, got {type(value).__name__} {value!r}"
    )


def _unknown(key: str, valid: list[str]) -> ConfigError:
    near = difflib.get_close_matches(key.split(".")[-1], valid, n=1)
    hint = f" (did you mean '{near[0]}'?)" if near else f" (valid: {', '.join(valid)})"
    return ConfigError(f"unknown config key '{key}'{hint}")


def _apply(obj: Any, values: dict[str, Any], prefix: str = "") -> None:
    if not isinstance(values, dict):
        raise ConfigError(f"config section '{prefix.rstrip('.') or '<root>'}' must be a mapping")
    hints = _hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    for key, value in values.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise _unknown(full, names)
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _apply(current, value, prefix=f"{full}.")
        else:
            setattr(obj, key, _coerce(value, hints[key], full))


def ablation_dir() -> Path:
    """The shipped ablation configs (``csna/configs/ablations/<name>.yaml``), found through
    importlib.resources so that any install has them."""
    return Path(str(resources.files("csna").joinpath("configs", "ablations")))


def default_yaml() -> dict[str, Any]:
    """The shipped ``configs/default.yaml``: every key with its default."""
    text = resources.files("csna").joinpath("configs/default.yaml").read_text()
    return yaml.safe_load(text) or {}


# Data-set presets were removed (issue 17): one set of defaults, with phase lengths that follow
# the table's size (csna.schedule), holds for every table.
PRESET_GONE = ("config key 'preset' is gone: csna has one set of defaults for every table, with phase "
               "lengths that follow the number of training rows (phaseN.steps; README, Configuration)")


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``key.sub=value``; the value is read as YAML (numbers, bools, lists)."""
    if "=" not in text:
        raise ConfigError(f"--set expects KEY=VALUE, got '{text}'")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    if value is None:
        value = raw
    return key.strip(), value


def _nest(key: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
    data_source: str | None = None,
) -> Config:
    """Build a Config: defaults, then the file, then overrides.

    Args:
        path: optional YAML file with any subset of the keys.
        overrides: ``["phase3.lr=1e-4", ...]`` or a flat ``{"phase3.lr": 1e-4}`` dict.
        data_source: shortcut for ``data.source`` (the CLI's ``--data``).
    """
    cfg = Config()
    file_values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            file_values = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {p} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(file_values, dict):
            raise ConfigError(f"config file {p} must hold a mapping of sections")
    items: list[tuple[str, Any]] = []
    if isinstance(overrides, dict):
        items = list(overrides.items())
    elif overrides:
        items = [parse_override(o) for o in overrides]
    if "preset" in file_values or "presets" in file_values or any(k == "preset" for k, _ in items):
        raise ConfigError(PRESET_GONE)
    _apply(cfg, file_values)
    for key, value in items:
        _apply(cfg, _nest(key, value))
    if data_source is not None:
        cfg.data.source = data_source
    validate(cfg)
    return cfg


def config_from_dict(values: dict[str, Any]) -> Config:
    """Rebuild a resolved config (from a checkpoint or config.yaml) exactly."""
    cfg = Config()
    # Runs saved before presets were removed record the preset they resolved (already applied).
    values = {k: v for k, v in values.items() if k != "preset"}
    _apply(cfg, values)
    validate(cfg)
    return cfg


def dump_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))

