"""Small shapers between node outputs and kedro-mlflow's datasets."""

from __future__ import annotations

from typing import Any


def to_mlflow_metrics(metrics: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Shape a flat dict for kedro-mlflow's ``MlflowMetricsHistoryDataset`` (logged at step 0).

    Args:
        metrics: name to number; non-numeric values (names, flags) are left out.

    Returns:
        ``{name: {"value": float, "step": 0}}``.
    """
    return {
        name: {"value": float(value), "step": 0}
        for name, value in metrics.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }
