"""``MlflowTags``: tags on the active MLflow run, declared in the catalog like any output."""

from __future__ import annotations

from typing import Any

import mlflow
from kedro.io import AbstractDataset, DatasetError


class MlflowTags(AbstractDataset[dict[str, Any], None]):
    """Saving sets each key as a tag of the active MLflow run (nothing happens without one);
    loading gives back what was saved in this session, so later nodes can use it.

    Example catalog entry::

        training_health_tags:
          type: acne_detection.datasets.MlflowTags
          prefix: training

    Args:
        prefix: put before each key, with a dot.
    """

    def __init__(self, *, prefix: str | None = None, metadata: dict[str, Any] | None = None) -> None:
        self._prefix = f"{prefix}." if prefix else ""
        self._saved: dict[str, Any] | None = None
        self.metadata = metadata

    def load(self) -> dict[str, Any]:
        if self._saved is None:
            raise DatasetError("no tags saved in this run yet; MLflow tags are read in the MLflow UI")
        return dict(self._saved)

    def save(self, data: dict[str, Any]) -> None:
        self._saved = dict(data)
        if mlflow.active_run() is not None:
            mlflow.set_tags({f"{self._prefix}{k}": str(v) for k, v in data.items()})

    def _exists(self) -> bool:
        return self._saved is not None

    def _describe(self) -> dict[str, Any]:
        return {"prefix": self._prefix}
