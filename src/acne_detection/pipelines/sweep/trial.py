"""One sweep recipe, trained and measured on validation, wherever it runs: in the node's own
process, or in a Ray Tune trial on any node of a cluster (``runners.py``).

A recipe logs into its child MLflow run (opened by ``run_sweep``) and writes ``result.json``,
``history.csv`` and ``checkpoints.csv`` in its folder. An interrupted recipe resumes from its
last epoch (``train.resume: auto``, ``training.resume``) when it is run again, from whichever
node: its folder holds the checkpoint.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from acne_detection.core.accelerator import detect_device
from acne_detection.core.params import EvalParams, GradingParams, TrainParams
from acne_detection.datasets import PretrainedWeights, YoloDataset
from acne_detection.framework.tracking import log_step_metrics, logging_into
from acne_detection.pipelines.sweep.validation import validate_checkpoint
from acne_detection.training.detector import train_detector


@dataclass(frozen=True)
class RecipeJob:
    """Everything one recipe needs to train and be measured, in one object a Ray trial receives."""

    name: str
    folder: Path  # absolute: the recipe's folder (work, checkpoints, result.json)
    dataset: YoloDataset  # its share of the training photos; validation whole
    pretrained: PretrainedWeights
    settings: TrainParams
    eval_params: EvalParams
    grading: GradingParams
    val_truth: pd.DataFrame  # the validation split's true boxes
    true_grades: pd.Series  # image_id → true grade
    sources: pd.Series | None  # image_id → the source photo it is a copy of (the accuracy's interval); None: unknown
    checkpoint_every: int
    run_id: str | None  # its child MLflow run (None: the sweep is not tracked)


def checkpoint_saver(folder: Path, every: int) -> dict[str, Any]:
    """An Ultralytics callback that keeps a copy of ``last.pt`` every ``every`` epochs (and at
    the last epoch), so grading can be measured against epochs after training."""
    folder.mkdir(parents=True, exist_ok=True)

    def on_model_save(trainer: Any) -> None:
        epoch = trainer.epoch + 1
        if every and (epoch % every == 0 or epoch == trainer.epochs) and Path(trainer.last).exists():
            shutil.copy2(trainer.last, folder / f"epoch{epoch}.pt")

    return {"on_model_save": on_model_save}


def train_recipe(job: RecipeJob) -> dict[str, Any]:
    """Train one recipe, then measure its kept checkpoints and its best weights on validation,
    logging into the recipe's child run (found through ``MLFLOW_TRACKING_URI`` in a Ray worker).

    Args:
        job: the recipe.

    Returns:
        What is written to ``result.json``: the validation metrics of the best weights,
        training minutes, epochs run, the epoch of the best weights and the weights' path.
    """
    folder = job.folder
    with logging_into(job.run_id, None):
        started = time.monotonic()
        best, history, summary = train_detector(
            job.dataset,
            job.pretrained,
            folder / "work",
            job.settings,
            callbacks=checkpoint_saver(folder / "checkpoints", job.checkpoint_every),
        )
        train_seconds = time.monotonic() - started
        device, _ = detect_device(job.settings.device)
        measure = {
            "dataset": job.dataset,
            "val_truth": job.val_truth,
            "true_grades": job.true_grades,
            "sources": job.sources,
            "eval_params": job.eval_params,
            "grading": job.grading,
            "device": device,
        }
        _measure_checkpoints(folder, measure).to_csv(folder / "checkpoints.csv", index=False)
        final = validate_checkpoint(best, **measure)
        history.to_csv(folder / "history.csv", index=False)
    result = {
        **final,
        "train_minutes": train_seconds / 60,
        "epochs_run": int(summary["epochs_run"]),
        "best_epoch": int(summary["best_epoch"]),
        "weights": str(best),
    }
    (folder / "result.json").write_text(json.dumps(result, indent=2))
    return result


def _measure_checkpoints(folder: Path, measure: dict[str, Any]) -> pd.DataFrame:
    """Each kept checkpoint measured on validation, one row per epoch, logged at its epoch."""
    rows = []
    for checkpoint in sorted((folder / "checkpoints").glob("epoch*.pt"), key=lambda p: int(p.stem[5:])):
        epoch = int(checkpoint.stem[5:])
        metrics = validate_checkpoint(checkpoint, **measure)
        rows.append({"epoch": epoch, **metrics})
        log_step_metrics({f"checkpoint/{k}": v for k, v in metrics.items()}, step=epoch)
    return pd.DataFrame(rows)
