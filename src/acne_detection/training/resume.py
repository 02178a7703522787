"""Resuming a training run that was interrupted (Ctrl-C, SIGKILL, power loss).

Ultralytics saves ``last.pt`` after every epoch, with the optimizer state and the epoch it
finished (``-1`` once training completed). A run resumes from it only when the settings
that shape the model are those of the interrupted run, as recorded in the work folder when
that run started; anything else starts fresh, and the log says why.

The record lives in the work folder, beside Ultralytics' run folder and not inside it: a
fresh multi-GPU (DDP) launch deletes the run folder (``generate_ddp_command``) after the
record is written, and a record deleted with it would make the run impossible to resume.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

logger = logging.getLogger(__name__)
RECORD = "kedro_run.json"


@dataclass(frozen=True)
class ResumePlan:
    """Whether to resume, why, and from where."""

    resume: bool
    reason: str
    checkpoint: Path | None = None
    completed_epochs: int = 0
    previous_run_id: str | None = None
    history: pd.DataFrame = field(default_factory=pd.DataFrame)  # epochs to replay into the new run


def prepare_training(workdir: Path, settings: dict[str, Any], mode: bool | str, run_id: str | None) -> ResumePlan:
    """Prepare the work folder for a training run: the one place that decides where it starts.

    Resuming: the interrupted run's folder is kept, its history trimmed to the checkpointed
    epochs and returned for replay. Starting fresh: Ultralytics' run folder is removed and this
    run's settings and MLflow run id are recorded in ``workdir``.

    Args:
        workdir: the training work folder (Ultralytics writes ``workdir/train``).
        settings: what must be unchanged to resume.
        mode: ``train.resume`` (``"auto"`` or ``False``).
        run_id: the MLflow run this training logs into.

    Returns:
        The plan: ``resume``, ``reason``, the ``checkpoint`` and ``history`` when resuming.
    """
    save_dir = workdir / "train"
    plan = plan_resume(save_dir, settings, mode)
    if plan.resume:
        return ResumePlan(
            True,
            plan.reason,
            plan.checkpoint,
            plan.completed_epochs,
            plan.previous_run_id,
            completed_history(save_dir, plan.completed_epochs),
        )
    shutil.rmtree(save_dir, ignore_errors=True)
    record_run(workdir, settings, run_id)
    return plan


def plan_resume(save_dir: Path, settings: dict[str, Any], mode: bool | str) -> ResumePlan:
    """Decide whether training continues from ``save_dir/weights/last.pt``.

    Args:
        save_dir: Ultralytics' run folder (the record is read from its parent, the work folder).
        settings: what must be unchanged to resume (data fingerprint, model, imgsz, epochs...).
        mode: ``"auto"`` (resume when possible) or ``False`` (always start over).

    Returns:
        The plan; its ``reason`` is meant for the log.
    """
    last = save_dir / "weights" / "last.pt"
    if mode is False:
        return ResumePlan(False, "starting fresh (train.resume is false)")
    if not last.exists():
        return ResumePlan(False, "starting fresh (no interrupted run to resume)")
    try:
        epoch = int(torch.load(last, map_location="cpu", weights_only=False).get("epoch", -1))
    except Exception as err:  # a checkpoint cut short by the interruption itself
        return ResumePlan(False, f"starting fresh (the last checkpoint is unreadable: {type(err).__name__})")
    if epoch < 0:
        return ResumePlan(False, "starting fresh (the previous run finished)")
    path = save_dir.parent / RECORD
    record = json.loads(path.read_text()) if path.exists() else {}
    before = record.get("settings", {})
    changed = sorted(k for k in set(settings) | set(before) if before.get(k) != settings.get(k))
    if changed:
        return ResumePlan(False, f"starting fresh (changed since the interrupted run: {', '.join(changed)})")
    if epoch + 1 >= int(settings.get("epochs", epoch + 2)):  # Ultralytics refuses: "nothing to resume"
        return ResumePlan(
            False,
            f"starting fresh (the interrupted run trained its last epoch, {epoch + 1} of {settings['epochs']}, "
            "and stopped before its final steps: Ultralytics resumes only an unfinished epoch count)",
        )
    return ResumePlan(
        True,
        f"resuming the interrupted run after epoch {epoch + 1} of {settings.get('epochs')}",
        last,
        epoch + 1,
        record.get("mlflow_run_id"),
    )


def record_run(workdir: Path, settings: dict[str, Any], run_id: str | None) -> None:
    """Write what a resumed run must match, and the MLflow run to link back to, in the work
    folder (outside the run folder a DDP launch deletes)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / RECORD).write_text(json.dumps({"settings": settings, "mlflow_run_id": run_id}, indent=2, sort_keys=True))


def completed_history(save_dir: Path, completed_epochs: int) -> pd.DataFrame:
    """The per-epoch rows of the checkpointed epochs, dropping a row written after the last
    checkpoint (the interruption can fall between Ultralytics' two writes), so the resumed
    run appends each epoch exactly once.

    Args:
        save_dir: Ultralytics' run folder (``results.csv`` is rewritten in place).
        completed_epochs: epochs the checkpoint holds.

    Returns:
        Those rows, columns stripped of padding.
    """
    path = save_dir / "results.csv"
    if not path.exists():
        return pd.DataFrame()
    history = pd.read_csv(path)
    history.columns = [c.strip() for c in history.columns]
    kept = history[history["epoch"] <= completed_epochs]
    kept.to_csv(path, index=False)
    return kept
