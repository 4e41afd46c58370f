"""Data layer: the `CausalData` container, its sources (IHDP, a synthetic SCM, user
tables), splits, and the covariate preprocessor."""

from csna.data.ihdp import ihdp
from csna.data.prep import Preprocessor, split_indices
from csna.data.synthetic import synthetic, synthetic_chunks
from csna.data.tables import CausalData, DataError, load_table, read_frame, validate

__all__ = [
    "CausalData",
    "DataError",
    "Preprocessor",
    "ihdp",
    "load_table",
    "read_frame",
    "split_indices",
    "synthetic",
    "synthetic_chunks",
    "validate",
]
