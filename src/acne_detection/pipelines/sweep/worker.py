"""One sweep recipe, trained and validated in its own process.

Ultralytics keeps memory across repeated ``train`` calls in one process, so each recipe runs
here, started by ``run_sweep`` as ``python -m acne_detection.pipelines.sweep.worker JOB``. The
job (a pickle the node wrote in the recipe's folder) holds the dataset, the settings and the
MLflow run to log into; the worker writes ``result.json`` and ``checkpoints.csv`` beside it.
An interrupted recipe resumes from its last epoch (``train.resume: auto``) when started again.
"""

from __future__ import annotations

import json
import pickle
import shutil
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from acne_detection.core.accelerator import detect_device
from acne_detection.pipelines.sweep.validation import validate_checkpoint
from acne_detection.pipelines.train.nodes import train_detector


def checkpoint_saver(folder: Path, every: int) -> dict[str, Any]:
    """An Ultralytics callback that keeps a copy of ``last.pt`` every ``every`` epochs (and at
    the last epoch), so grading can be measured against epochs after training."""
    folder.mkdir(parents=True, exist_ok=True)

    def on_model_save(trainer: Any) -> None:
        epoch = trainer.epoch + 1
        if every and (epoch % every == 0 or epoch == trainer.epochs) and Path(trainer.last).exists():
            shutil.copy2(trainer.last, folder / f"epoch{epoch}.pt")

    return {"on_model_save": on_model_save}


def run(job: dict[str, Any]) -> dict[str, Any]:
    """Train one recipe, then measure its checkpoints and its best weights on validation.

    Args:
        job: ``folder``, ``dataset``, ``pretrained``, ``train`` (typed), ``eval``, ``grading``,
            ``val_truth``, ``true_grades``, ``checkpoint_every``, ``run_id`` and ``tracking_uri``.

    Returns:
        The result written to ``result.json``: the validation metrics of the best weights,
        training minutes, the epoch of the best weights.
    """
    folder = Path(job["folder"])
    if job["tracking_uri"]:
        mlflow.set_tracking_uri(job["tracking_uri"])
    context = mlflow.start_run(run_id=job["run_id"]) if job["run_id"] else nullcontext()
    with context:
        started = time.monotonic()
        best, history, summary = train_detector(
            job["dataset"],
            job["pretrained"],
            folder / "work",
            job["train"],
            callbacks=checkpoint_saver(folder / "checkpoints", job["checkpoint_every"]),
        )
        train_seconds = time.monotonic() - started
        device, _ = detect_device(job["train"].device)
        measure = dict(
            dataset=job["dataset"],
            val_truth=job["val_truth"],
            true_grades=job["true_grades"],
            eval_params=job["eval"],
            grading=job["grading"],
            device=device,
        )
        rows = []
        for checkpoint in sorted((folder / "checkpoints").glob("epoch*.pt"), key=lambda p: int(p.stem[5:])):
            epoch = int(checkpoint.stem[5:])
            metrics = validate_checkpoint(checkpoint, **measure)
            rows.append({"epoch": epoch, **metrics})
            if job["run_id"]:
                mlflow.log_metrics({f"checkpoint/{k}": v for k, v in metrics.items()}, step=epoch)
        pd.DataFrame(rows).to_csv(folder / "checkpoints.csv", index=False)
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


if __name__ == "__main__":
    run(pickle.loads(Path(sys.argv[1]).read_bytes()))
