"""No usage event leaves the machine from the paths that import the package without a Kedro
hook: the served model, the notebook helpers, and the pipelines ``kedro viz`` loads; and none
from the trainer, whose Ultralytics integrations are removed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import PROJECT_ROOT

PROBE = """
import json, sys
{imports}
import ultralytics.utils as u
import ultralytics.utils.events as e
import os
print(json.dumps({{"online": u.ONLINE, "events": e.events.enabled, "offline": os.environ.get("YOLO_OFFLINE")}}))
"""


def _probe(imports: str) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("YOLO_OFFLINE", "DO_NOT_TRACK", "KEDRO_DISABLE_TELEMETRY", "MLFLOW_DISABLE_TELEMETRY")
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(imports=imports)],
        capture_output=True,
        text=True,
        env=env,
        cwd=PROJECT_ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "imports",
    [
        "import acne_detection.model.served",  # what `mlflow models serve` loads
        # what `kedro viz` loads: the project's settings and every pipeline
        "from kedro.framework.startup import bootstrap_project\nbootstrap_project('.')\n"
        "from kedro.framework.project import pipelines\nassert pipelines['__default__'].nodes",
        "from acne_detection.core.runtimes import load_detector",  # what the notebook calls
        "import ultralytics\nimport acne_detection",  # Ultralytics first: its events are switched off after the fact
    ],
)
def test_no_usage_events_from_paths_without_a_kedro_hook(imports: str) -> None:
    state = _probe(imports)
    assert state["offline"] == "1" and state["events"] is False


def test_a_user_who_opts_in_keeps_their_setting(monkeypatch) -> None:
    env = {**os.environ, "YOLO_OFFLINE": "0"}
    done = subprocess.run(
        [sys.executable, "-c", "import acne_detection, os; print(os.environ['YOLO_OFFLINE'])"],
        capture_output=True,
        text=True,
        env=env,
        cwd=PROJECT_ROOT,
        timeout=120,
    )
    assert done.stdout.strip() == "0"


def test_no_ultralytics_callback_survives_on_the_trainer(tiny_yolo, tmp_path) -> None:
    from acne_detection.training.trainers import ProjectTrainer

    dataset, _ = tiny_yolo
    trainer = ProjectTrainer(
        overrides={
            "model": "yolov8n.yaml",
            "data": str(dataset.data_yaml),
            "epochs": 1,
            "imgsz": 64,
            "device": "cpu",
            "project": str(tmp_path),
            "name": "t",
            "plots": False,
        }
    )
    modules = {f.__module__ for fs in trainer.callbacks.values() for f in fs}
    assert modules == {"ultralytics.utils.callbacks.base"}, modules
    # what Ultralytics' own trainer would carry: its usage-event callbacks, which the project removes
    assert "ultralytics.utils.events" in _integrations()


def _integrations() -> set[str]:
    from types import SimpleNamespace

    from ultralytics.utils.callbacks import add_integration_callbacks, get_default_callbacks

    fake = type("DetectionTrainer", (SimpleNamespace,), {})(callbacks=get_default_callbacks())
    add_integration_callbacks(fake)
    return {f.__module__ for fs in fake.callbacks.values() for f in fs}
