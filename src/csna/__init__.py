"""csna: a causal structural neural architecture for treatment-effect estimation."""

__version__ = "0.1.0"
