"""The project's Ultralytics trainers: Ultralytics' own, with its integrations removed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from ultralytics.models.yolo.detect import DetectionTrainer


def epoch_history(trainer: Any) -> pd.DataFrame:
    """A finished Ultralytics trainer's per-epoch rows (its ``results.csv``), the column names
    without the padding Ultralytics writes them with."""
    history = pd.read_csv(Path(trainer.save_dir) / "results.csv")
    history.columns = [c.strip() for c in history.columns]
    return history


def _third_party(callback: Any) -> bool:
    """An Ultralytics integration (usage events, Platform, MLflow, W&B, ...), not its base no-op."""
    module = getattr(callback, "__module__", "") or ""
    return module.startswith("ultralytics.") and module != "ultralytics.utils.callbacks.base"


class WithoutIntegrations:
    """An Ultralytics trainer without its integrations (usage events, Platform, MLflow, Comet,
    ...): tracking goes through kedro-mlflow, and nothing leaves the machine. Ultralytics' own
    MLflow callback would also end the run kedro-mlflow holds open."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for event, funcs in self.callbacks.items():  # Ultralytics' own no-op defaults and the project's stay
            self.callbacks[event] = [f for f in funcs if not _third_party(f)]


class ProjectTrainer(WithoutIntegrations, DetectionTrainer):
    """Ultralytics' detection trainer without its integrations. In multi-GPU training each worker
    rebuilds this class, so the integrations stay off there too."""
