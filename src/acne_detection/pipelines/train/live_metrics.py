"""Ultralytics callbacks that stream training into the Kedro run's MLflow run, per epoch.

Ultralytics' own MLflow integration is removed from the trainer (it would start runs,
switch experiments and turn autologging on); these callbacks write into whatever run
kedro-mlflow opened, with the epoch (1-based) as the step, and do nothing without one.
The re-validation of the best checkpoint after training (which Ultralytics reports through
the same event) is logged once, as ``best/...``, so each per-epoch metric has exactly one
point per epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import mlflow
import pandas as pd


def _clean(name: str) -> str:
    return name.replace("(", "").replace(")", "")


def epoch_metrics(trainer: Any) -> dict[str, float]:
    """The metrics of the epoch that just ended, named as in Ultralytics' ``results.csv``.

    Args:
        trainer: an Ultralytics ``BaseTrainer`` after ``on_fit_epoch_end``.

    Returns:
        Train losses (``train/box_loss`` ...), validation losses and metrics
        (``val/box_loss``, ``metrics/mAP50B`` ...), learning rates (``lr/pg0`` ...),
        ``epoch_time_s`` and ``images_per_s``.
    """
    metrics = {**trainer.label_loss_items(trainer.tloss, prefix="train"), **(trainer.metrics or {}), **(trainer.lr or {})}
    if trainer.epoch_time:
        metrics["epoch_time_s"] = trainer.epoch_time
        metrics["images_per_s"] = len(trainer.train_loader.dataset) / trainer.epoch_time
    return {_clean(k): float(v) for k, v in metrics.items()}


def live_metrics_callbacks(tags: dict[str, str]) -> dict[str, Callable[[Any], None]]:
    """Callbacks to register on an Ultralytics model with ``model.add_callback``.

    Args:
        tags: MLflow tags set when training starts (device, pretrained weights, ...).

    Returns:
        ``{event: callback}`` for ``on_train_start`` and ``on_fit_epoch_end``.
    """

    def on_train_start(trainer: Any) -> None:
        if mlflow.active_run():
            mlflow.set_tags(tags)

    def on_fit_epoch_end(trainer: Any) -> None:
        if not mlflow.active_run():
            return
        if getattr(trainer, "in_final_eval", False):  # the best checkpoint re-validated after the last epoch
            best = {f"best/{_clean(k)}": float(v) for k, v in (trainer.metrics or {}).items()}
            mlflow.log_metrics(best, step=0)
            return
        mlflow.log_metrics(epoch_metrics(trainer), step=trainer.epoch + 1)

    return {"on_train_start": on_train_start, "on_fit_epoch_end": on_fit_epoch_end}


def current_run_id() -> str | None:
    """The id of the MLflow run training logs into, if any (recorded with the model)."""
    run = mlflow.active_run()
    return run.info.run_id if run else None


def replay_history(history: pd.DataFrame) -> None:
    """Log the epochs an interrupted run completed into this run, one point per epoch, so a
    resumed run holds the whole history (and links back to the interrupted one by a tag).

    Args:
        history: ``results.csv`` rows of the completed epochs.
    """
    if not mlflow.active_run() or history.empty:
        return
    for row in history.to_dict("records"):
        epoch = int(row.pop("epoch"))
        mlflow.log_metrics({_clean(k): float(v) for k, v in row.items() if k != "time" and pd.notna(v)}, step=epoch)
