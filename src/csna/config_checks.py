"""Range and choice checks of a loaded configuration, and the error every config problem raises.

Kept apart from ``config.py`` (the dataclasses, YAML and overrides) so each file holds one concept;
``csna.config`` re-exports all three names.
"""

from __future__ import annotations

import importlib.util
from typing import Any


class ConfigError(ValueError):
    """A configuration key or value that cannot be used."""


VALID = {
    "data.outcome_type": ("auto", "continuous", "binary", "multiclass"),
    "data.numeric_scaling": ("standard", "quantile", "auto"),
    "model.positional": ("causal", "sequence", "none"),
    "model.nodes": ("latent", "variables"),
    "model.readout": ("mean", "nodes"),
    "model.adjust": ("all", "graph"),
    "phase2.skeleton": ("pc", "none"),
    "scheduler": ("cosine", "plateau", "none"),
    "lambda_schedule": ("constant", "linear", "cosine"),
    "phase4.loss_unit": ("train", "val", "outcome"),
    "train.precision": ("fp32", "bf16"),
    "train.discrepancy": ("mmd", "wasserstein"),
    "train.causal_reference": ("ipw", "aipw"),
    "train.factual_weights": ("none", "ipw"),
    "train.effect_shrink": ("rloss", "scale", "none"),
    "train.shrink_outcome": ("select", "ensemble", "direct"),
    "train.shrink_level": ("test", "blend"),
}


def validate(cfg: Any) -> None:
    """Range checks that the types alone do not catch."""
    for key, choices in VALID.items():
        if "." in key:
            sec, name = key.split(".")
            val = getattr(getattr(cfg, sec), name)
            if val not in choices:
                raise ConfigError(f"config key '{key}' must be one of {choices}, got {val!r}")
    for n in (1, 2, 3, 4):
        ph = cfg.phase(n)
        for name in ("scheduler", "lambda_schedule"):
            if getattr(ph, name) not in VALID[name]:
                raise ConfigError(
                    f"config key 'phase{n}.{name}' must be one of {VALID[name]}, "
                    f"got {getattr(ph, name)!r}"
                )
        if ph.lr <= 0:
            raise ConfigError(f"config key 'phase{n}.lr' must be positive, got {ph.lr}")
        if ph.epochs < -1:
            raise ConfigError(f"config key 'phase{n}.epochs' must be >= 0, or -1 (from steps), got {ph.epochs}")
        if ph.steps < 0 or ph.min_epochs < 0 or ph.warmup_steps < 0:
            raise ConfigError(f"config keys 'phase{n}.steps/min_epochs/warmup_steps' must be >= 0")
        for lam in ("lambda_causal", "lambda_geometric", "lambda_dc", "lambda_dis", "lambda_stable"):
            if getattr(ph, lam) < 0:
                raise ConfigError(f"config key 'phase{n}.{lam}' must be >= 0, got {getattr(ph, lam)}")
    pc_needed = cfg.model.nodes == "variables" and cfg.phase2.skeleton == "pc"
    if pc_needed and importlib.util.find_spec("causallearn") is None:
        # Checked here, before anything is trained or saved, rather than at the start of phase 2.
        raise ConfigError("model.nodes = variables with phase2.skeleton = pc needs causal-learn: "
                          "pip install 'csna[graph]' (or --set phase2.skeleton=none)")
    at_least = [(f"phase2.{k}", 0) for k in ("lambda_structure", "lambda_sparse", "dag_start", "dag_end",
                                               "edge_threshold")]
    at_least += [("phase4.eta", 0), ("phase4.ate_tolerance", 0), ("phase4.cate_tolerance", 0),
                 ("phase4.cf_weight", 0), ("train.batch_size", 2), ("train.ensemble_workers", 0), ("train.ensemble", 1),
                 ("log.every_steps", 1),
                 ("model.propensity_rep", 0), ("train.effect_smoothing", 0)]
    for key, low in at_least:
        sec, name = key.split(".")
        val = getattr(getattr(cfg, sec), name)
        if val < low:
            raise ConfigError(f"config key '{key}' must be >= {low}, got {val}")
    if cfg.model.propensity_feature and cfg.model.nodes != "latent":
        raise ConfigError("model.propensity_feature needs model.nodes = latent (variable nodes embed each column "
                          "on its own; the log-odds has no variable)")
    if not 0.0 <= cfg.phase3.block_drop < 1.0:
        raise ConfigError(f"config key 'phase3.block_drop' must be in [0, 1), got {cfg.phase3.block_drop}")
    if cfg.train.grad_clip <= 0:
        raise ConfigError(f"config key 'train.grad_clip' must be positive, got {cfg.train.grad_clip}")
    m = cfg.model
    if m.d % m.heads or (m.d // m.heads) % 2:
        raise ConfigError(
            f"config keys 'model.d' ({m.d}) / 'model.heads' ({m.heads}) must give an even head width"
        )
    if m.k < 2:
        raise ConfigError(f"config key 'model.k' must be >= 2, got {m.k}")
    if m.max_variable_nodes < 0:
        raise ConfigError(f"config key 'model.max_variable_nodes' must be >= 0 (0: no cap), got {m.max_variable_nodes}")
    if not cfg.data.clip_sd >= 0:
        raise ConfigError(f"config key 'data.clip_sd' must be >= 0 (0: no clipping), got {cfg.data.clip_sd}")
    if len(cfg.data.split) != 3 or abs(sum(cfg.data.split) - 1.0) > 1e-6 or min(cfg.data.split) <= 0:
        raise ConfigError("config key 'data.split' must be three positive fractions summing to 1, "
                          f"got {cfg.data.split}")
