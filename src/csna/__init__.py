"""csna: a causal structural neural architecture for treatment-effect estimation.

Public API: ``CSNAModel``, ``CSNAEstimator``, ``causal_rope_scores``, ``load_config``, ``csna.data``
loaders.

The names below load on first use (PEP 562), not when the package is imported: ``csna.cli``, the
ensemble's spawned worker processes and ``csna.bench`` each import only the modules they run, where
importing the estimator (scipy.stats, the DR and prediction code) cost every process close to a
second.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # type checkers and editors see the names; nothing is imported at run time
    from .config import Config, ConfigError, load_config
    from .estimator import CSNAEstimator
    from .model import CSNAModel
    from .nn.rope import causal_rope_scores

__version__ = "0.1.0"

_EXPORTS = {
    "CSNAEstimator": ".estimator",
    "CSNAModel": ".model",
    "Config": ".config",
    "ConfigError": ".config",
    "causal_rope_scores": ".nn.rope",
    "load_config": ".config",
}

__all__ = ["CSNAEstimator", "CSNAModel", "Config", "ConfigError", "causal_rope_scores", "load_config", "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
