"""Ultralytics callbacks that stream training into the Kedro run's MLflow run, per epoch
(``acne_detection.training`` registers them; the one live stream kedro-mlflow's catalog cannot declare).

Ultralytics' own MLflow integration is removed from the trainer (it would start runs,
switch experiments and turn autologging on). These callbacks log into one named run, by id,
through an ``MlflowClient`` on the tracking URI they were made with, not into "the active
run": in multi-GPU (DDP) training Ultralytics rebuilds the trainer and its callbacks in
worker processes that have no Kedro session and no active MLflow run. Only rank 0 (or a
single-process run, rank -1) logs; the other ranks stay silent. The epoch (1-based) is the
step. The re-validation of the best checkpoint after training, which Ultralytics reports
through the same event, is told apart by the event order (no epoch started since the last
report) and logged once, as ``best/...``, so each per-epoch metric has one point per epoch.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import mlflow
import pandas as pd
from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient

from acne_detection.framework.tracking import current_run_id


def _clean(name: str) -> str:
    return name.replace("(", "").replace(")", "")


def process_rank() -> int:
    """This process's rank in distributed training: -1 alone, 0 for the first DDP worker.
    Read at call time from the environment ``torch.distributed.run`` sets (``RANK``)."""
    return int(os.environ.get("RANK", -1))


def epoch_metrics(trainer: Any) -> dict[str, float]:
    """The metrics of the epoch that just ended, named as in Ultralytics' ``results.csv``.

    Args:
        trainer: an Ultralytics ``BaseTrainer`` after ``on_fit_epoch_end``.

    Returns:
        Train losses (``train/box_loss`` ...), validation losses and metrics
        (``val/box_loss``, ``metrics/mAP50B`` ...), learning rates (``lr/pg0`` ...),
        ``epoch_time_s`` and ``images_per_s``.
    """
    metrics = {
        **trainer.label_loss_items(trainer.tloss, prefix="train"),
        **(trainer.metrics or {}),
        **(trainer.lr or {}),
    }
    if trainer.epoch_time:
        metrics["epoch_time_s"] = trainer.epoch_time
        metrics["images_per_s"] = len(trainer.train_loader.dataset) / trainer.epoch_time
    return {_clean(k): float(v) for k, v in metrics.items()}


class LiveMetrics:
    """Per-epoch logging into one MLflow run, safe to pickle into DDP workers.

    Args:
        run_id: the run to log into (``None``: tracking is off, nothing is logged).
        tracking_uri: where that run lives (the Kedro run's tracking URI).
        tags: set on the run when training starts (device, weights source, ...).
    """

    def __init__(self, run_id: str | None, tracking_uri: str, tags: dict[str, str]) -> None:
        self.run_id, self.tracking_uri, self.tags = run_id, tracking_uri, dict(tags)
        self._epoch_running = False

    @classmethod
    def for_active_run(cls, tags: dict[str, str]) -> LiveMetrics:
        """Callbacks bound to the MLflow run active now (kedro-mlflow's), by id and URI."""
        return cls(current_run_id(), mlflow.get_tracking_uri(), tags)

    def callbacks(self) -> dict[str, Callable[[Any], None]]:
        """``{event: callback}`` to register with ``model.add_callback``."""
        return {
            "on_train_start": self.on_train_start,
            "on_train_epoch_start": self.on_train_epoch_start,
            "on_fit_epoch_end": self.on_fit_epoch_end,
        }

    def _client(self) -> MlflowClient | None:
        if self.run_id is None or process_rank() not in (-1, 0):
            return None
        return MlflowClient(tracking_uri=self.tracking_uri)

    def on_train_start(self, trainer: Any) -> None:
        client = self._client()
        if client is not None:
            client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in self.tags.items()])

    def on_train_epoch_start(self, trainer: Any) -> None:
        self._epoch_running = True

    def on_fit_epoch_end(self, trainer: Any) -> None:
        final_eval, self._epoch_running = not self._epoch_running, False
        client = self._client()
        if client is None:
            return
        now = int(time.time() * 1000)
        if final_eval:  # the best checkpoint re-validated after the last epoch
            values, step = {f"best/{_clean(k)}": float(v) for k, v in (trainer.metrics or {}).items()}, 0
        else:
            values, step = epoch_metrics(trainer), trainer.epoch + 1
        client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()])


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
