"""Resuming a training run that was interrupted (Ctrl-C, SIGKILL, power loss).

Ultralytics saves ``last.pt`` after every epoch, with the optimizer state and the epoch it
finished (``-1`` once training completed). A run resumes from it only when the settings
that shape the model are those of the interrupted run, as recorded beside the checkpoint
when that run started; anything else starts fresh, and the log says why.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
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


def plan_resume(save_dir: Path, settings: dict[str, Any], mode: bool | str) -> ResumePlan:
    """Decide whether training continues from ``save_dir/weights/last.pt``.

    Args:
        save_dir: Ultralytics' run folder.
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
    record = json.loads((save_dir / RECORD).read_text()) if (save_dir / RECORD).exists() else {}
    before = record.get("settings", {})
    changed = sorted(k for k in set(settings) | set(before) if before.get(k) != settings.get(k))
    if changed:
        return ResumePlan(False, f"starting fresh (changed since the interrupted run: {', '.join(changed)})")
    return ResumePlan(True, f"resuming the interrupted run after epoch {epoch + 1} of {settings.get('epochs')}",
                      last, epoch + 1, record.get("mlflow_run_id"))


def record_run(save_dir: Path, settings: dict[str, Any], run_id: str | None) -> None:
    """Write what a resumed run must match, and the MLflow run to link back to."""
    save_dir.mkdir(parents=True, exist_ok=True)
    (save_dir / RECORD).write_text(json.dumps({"settings": settings, "mlflow_run_id": run_id}, indent=2, sort_keys=True))


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
