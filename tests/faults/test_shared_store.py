"""Two first runs on one new store: two copies of the project (``CheckoutLock`` refuses two
runs in one checkout) start ``kedro run --pipeline data`` at the same moment against one SQLite
file that does not exist yet. Both must finish, each with its run in the store. Without
``checks.open_store``'s lock, one of them died creating the store's schema (Alembic: "Online
migration expected to match one row", or "duplicate column name")."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from acne_detection.testing import copy_project


def test_two_first_runs_on_one_new_sqlite_store_both_finish(tmp_path: Path) -> None:
    store = tmp_path / "shared" / "mlflow.db"
    store.parent.mkdir()
    uri = f"sqlite:///{store}"
    projects = [copy_project(tmp_path / name, n_images=12, size=64) for name in ("alice", "bob")]
    kedro = str(Path(sys.executable).parent / "kedro")
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONUNBUFFERED": "1", "COLUMNS": "400"}
    start = time.monotonic()
    runs = [
        subprocess.Popen(
            [kedro, "run", "--pipeline", "data"],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for project in projects
    ]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    print(f"two data runs at once: {time.monotonic() - start:.1f} s")
    for project, run, output in zip(projects, runs, outputs, strict=True):
        assert run.returncode == 0, f"{project.name}: {output[-4000:]}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("acne_detection")
    found = client.search_runs([experiment.experiment_id])
    assert len(found) == 2 and {r.info.status for r in found} == {"FINISHED"}
    for run in found:
        assert run.data.metrics.get("data.images_read") == 12, run.data.metrics


def test_a_store_held_too_long_by_another_process_is_named(tmp_path: Path) -> None:
    from filelock import FileLock

    from acne_detection.framework.checks import open_store

    store = tmp_path / "mlflow.db"
    with FileLock(str(tmp_path / "mlflow.db.lock")), pytest.raises(RuntimeError, match="mlflow.db.lock for 1 s"):
        open_store(f"sqlite:///{store}", timeout=1)
    assert not store.exists()  # it waited, and did not open the store beside the holder
    open_store(f"sqlite:///{store}")
    assert store.exists()
    open_store("http://127.0.0.1:9")  # a server creates its own schema: nothing to open, nothing to wait for
