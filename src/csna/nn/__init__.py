"""The architecture's building blocks, one concept per file."""

from .attention import CausalAttention, CausalTransformerBlock
from .distance import causal_distance, shortest_path_hops
from .encoder import CausalEncoder
from .heads import OutcomeHeads, PropensityHead
from .lattice import LatticeEncoder, LatticeLayer, LearnedAdjacency
from .rope import causal_rope_scores, rope_frequencies, rotate_pairs
from .utility import MetaUtility

__all__ = [
    "CausalAttention", "CausalTransformerBlock", "causal_distance", "shortest_path_hops", "CausalEncoder",
    "OutcomeHeads", "PropensityHead", "LatticeEncoder", "LatticeLayer", "LearnedAdjacency",
    "causal_rope_scores", "rope_frequencies", "rotate_pairs", "MetaUtility",
]
