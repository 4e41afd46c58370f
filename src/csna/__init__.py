"""csna: a causal structural neural architecture for treatment-effect estimation.

Public API: ``CSNAModel``, ``causal_rope_scores``, ``load_config``, ``csna.data`` loaders.
"""

from .config import Config, ConfigError, load_config
from .estimator import CSNAEstimator
from .model import CSNAModel
from .nn.rope import causal_rope_scores

__version__ = "0.1.0"

__all__ = ["CSNAEstimator", "CSNAModel", "Config", "ConfigError", "causal_rope_scores", "load_config", "__version__"]
