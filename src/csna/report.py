"""``csna evaluate``: metrics.json and, in time, figures and report.md for a run."""

from __future__ import annotations

from typing import Any

from .data import CausalData
from .evaluate import core_metrics
from .runner import Run


def evaluate_and_report(run: Run, data: CausalData, figures: bool = True) -> dict[str, Any]:
    """Compute every metric that applies to ``run`` on ``data``."""
    return core_metrics(run, data)
