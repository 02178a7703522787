"""Why a run stopped, kept where the user and the tracking store look: a full disk explained, and
the reason written on the MLflow run before it is marked FAILED."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from kedro.framework.hooks import hook_impl

from acne_detection.framework.full_disk import find_full_disk, remove_half_written
from acne_detection.framework.hooks.run_report import root_cause

logger = logging.getLogger(__name__)
MAX_TAG = 5000  # MLflow's limit on a tag's value is 8,000 characters


class RunFailure:
    """Runs first when a run fails, before kedro-mlflow marks its MLflow run FAILED.

    A full disk (``ENOSPC``, ``EDQUOT``, or SQLite's "database or disk is full") is explained: the
    file being written, the space it needed and the space left (``full_disk``), added to the
    error itself as a note, so that it is the last thing the traceback prints, and logged. The
    half-written file that write left, if it lies in the project, is removed: it is unreadable,
    and its space is what the tracking store, often on the same disk, needs to record the
    failure. Then, for every failure, the reason is written on the run (tag ``failure``, and the
    run's description). Nothing here raises: the original error is the one the user sees.
    """

    @hook_impl(tryfirst=True)  # before kedro-mlflow ends the run, which needs a little space on a local store
    def on_pipeline_error(self, error: Exception, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        import mlflow

        try:
            full = find_full_disk(error, store=_sqlite_store(mlflow.get_tracking_uri()))
            if full is not None:
                freed = remove_half_written(full, inside=Path(run_params.get("project_path") or Path.cwd()))
                note = full.message + (f" The half-written file was removed ({freed:,} bytes freed)." if freed else "")
                error.add_note(note)  # reads on from the error's own message
                logger.error("%s %s", full.headline, note)
        except Exception as err:  # an explanation that fails must not hide the error it explains
            logger.warning("Could not explain the full disk (%s: %s)", type(err).__name__, err)
        run = mlflow.active_run()
        if run is None:
            return
        reason = root_cause(error)
        try:
            mlflow.set_tags({"failure": reason[:MAX_TAG], "mlflow.note.content": f"**Failed**: {reason}"[:MAX_TAG]})
        except Exception as err:
            logger.warning(
                "Could not write why the run stopped on MLflow run %s (%s: %s)",
                run.info.run_id,
                type(err).__name__,
                err,
            )


def _sqlite_store(uri: str) -> Path | None:
    """The SQLite file behind a tracking URI (``sqlite:///relative``, ``sqlite:////absolute``), else ``None``."""
    parsed = urlparse(uri)
    return Path(parsed.path[1:]) if parsed.scheme == "sqlite" else None
