"""``MlflowInputs``: tables logged as the active MLflow run's inputs (its "Datasets used")."""

from __future__ import annotations

from typing import Any

import mlflow.data
import pandas as pd
from kedro.io import AbstractDataset, DatasetError


class MlflowInputs(AbstractDataset[dict[str, Any], None]):
    """Saving ``{"source": where the data came from, "tables": {name: DataFrame}}`` logs each
    table with ``mlflow.log_input`` as an MLflow dataset (``mlflow.data.from_pandas``): its
    name, digest (MLflow's hash of the rows), schema and row count, and the source, so the
    run page's "Datasets used" lists them and two runs can be compared on their data. The
    rows themselves are not sent to the tracking store. Nothing happens without an active run.

    Example catalog entry::

        split_lineage:
          type: acne_detection.datasets.MlflowInputs
          context: training

    Args:
        context: the context tag MLflow shows beside each input (``training``, ``evaluation``).
    """

    def __init__(self, *, context: str = "training", metadata: dict[str, Any] | None = None) -> None:
        self._context = context
        self._saved: dict[str, str] | None = None
        self.metadata = metadata

    def load(self) -> dict[str, str]:
        if self._saved is None:
            raise DatasetError("no inputs logged in this run yet; MLflow shows them on the run page")
        return dict(self._saved)

    def save(self, data: dict[str, Any]) -> None:
        digests = {}
        for name, table in data["tables"].items():
            dataset = mlflow.data.from_pandas(pd.DataFrame(table), source=str(data["source"]), name=name)
            digests[name] = dataset.digest
            if mlflow.active_run() is not None:
                _log_input(dataset, self._context)
        self._saved = digests

    def _exists(self) -> bool:
        return self._saved is not None

    def _describe(self) -> dict[str, Any]:
        return {"context": self._context}


def _log_input(dataset: Any, context: str, *, tries: int = 4) -> None:
    """``mlflow.log_input``, tolerating another run logging the same dataset at the same moment:
    MLflow looks the dataset up, then inserts it, so two runs of identical data starting together
    on a PostgreSQL store both insert, and the second hits the unique key (found by the suite's
    two concurrent runs). Tried again, the second finds the first one's row and links to it."""
    import time

    from mlflow.exceptions import MlflowException

    for attempt in range(tries):
        try:
            mlflow.log_input(dataset, context=context)
            return
        except MlflowException as err:
            duplicate = "already exists" in str(err) or "UniqueViolation" in str(err)
            if not duplicate or attempt == tries - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
