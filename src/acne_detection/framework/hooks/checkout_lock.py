"""One ``kedro run`` at a time per checkout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl


class CheckoutLock:
    """One run at a time writes a checkout's ``data/`` folder (datasets, the training work
    folder, reports): a second ``kedro run`` in the same checkout is refused with a message,
    rather than overwriting the first one's files mid-run. The lock is an OS file lock
    (``filelock``), so a run killed with SIGKILL releases it. ``predict`` writes only its own
    folder and may run beside training. Two people share a tracking server from two copies of
    the project, not from one checkout (see README, "Scaling out").
    """

    EXEMPT = frozenset({"predict", "review", "reviewed"})

    def __init__(self) -> None:
        self._lock: Any = None

    def acquire(self, project_path: Path, pipeline_name: str) -> None:
        import json
        import os
        import time

        from filelock import FileLock, Timeout

        data = project_path / "data"
        data.mkdir(exist_ok=True)
        lock, info = FileLock(str(data / ".kedro_run.lock")), data / ".kedro_run.json"
        try:
            lock.acquire(timeout=0)
        except Timeout:
            holder = json.loads(info.read_text()) if info.exists() else {}
            raise RuntimeError(
                f"Another kedro run is using this checkout's data folder ({data}): pipeline "
                f"'{holder.get('pipeline', '?')}', process {holder.get('pid', '?')}, "
                f"started {holder.get('started', '?')}. "
                "Two runs in one checkout would overwrite each other's datasets and training folder: wait for it to "
                "finish, or run from another copy of the project (both can log to one MLflow server: see README, "
                '"Scaling out").'
            ) from None
        info.write_text(
            json.dumps({"pipeline": pipeline_name, "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S")})
        )
        self._lock = lock

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    @hook_impl(tryfirst=True)  # before kedro-mlflow opens a run: a refused run leaves none behind
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        names = run_params.get("pipeline_names") or [run_params.get("pipeline_name") or "__default__"]
        if set(names) <= self.EXEMPT:
            return
        self.acquire(Path(run_params.get("project_path") or Path.cwd()), ", ".join(names))

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        self.release()

    @hook_impl
    def on_pipeline_error(self, error: Exception, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        self.release()
