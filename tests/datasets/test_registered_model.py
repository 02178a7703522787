"""Registration survives a kill: the version is created with its record's tags in one call, so a
``register`` killed at any point (SIGKILL, a real process) leaves no version without its operating
point; the next registration adds a missing card, and a changed record becomes a new version."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from acne_detection.core.files import sha256_of
from acne_detection.core.grading import GradingRule
from acne_detection.core.params import parse
from acne_detection.datasets import ModelRecords, RegisteredDetector
from acne_detection.model.record import ModelRecord
from acne_detection.pipelines.predict.nodes import choose_model

# registers the weights, but SIGKILLs itself at ``stop`` (the call patched to do so), as a power cut would
REGISTER = textwrap.dedent(
    """
    import os, signal, sys, json
    import mlflow
    from pathlib import Path
    from acne_detection.core.grading import GradingRule
    from acne_detection.datasets import RegisteredDetector
    from acne_detection.model.record import ModelRecord

    weights, record, stop = Path(sys.argv[1]), ModelRecord.from_json(sys.argv[2]), sys.argv[3]
    kill = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
    if stop == "before the version":
        mlflow.register_model = kill
    else:
        mlflow.MlflowClient.update_model_version = kill
    with mlflow.start_run():
        RegisteredDetector(name="acne-detector").save({"weights": weights, "record": record, "description": "card"})
    """
)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)  # a SQLite store keeps its artifacts in ./mlruns: here, not in the checkout
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    return uri


def _record(weights: Path, threshold: float) -> ModelRecord:
    return ModelRecord.default(
        sha256_of(weights), GradingRule(), threshold=threshold, threshold_rule="max_f1", predict={"runtime": "torch"}
    )


@pytest.mark.parametrize("stop", ["before the version", "before the card"])
def test_a_register_killed_midway_leaves_no_version_without_its_record(
    stop: str, store: str, coco_model, tmp_path: Path
) -> None:
    weights = tmp_path / "yolov8n.pt"
    shutil.copy(coco_model.ckpt_path, weights)
    record = _record(weights, 0.35)
    done = subprocess.run(
        [sys.executable, "-c", REGISTER, str(weights), record.to_json(), stop],
        cwd=tmp_path,
        env={**os.environ, "MLFLOW_TRACKING_URI": store},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == -9, done.stderr[-2000:]  # really killed
    client = MlflowClient()
    versions = client.search_model_versions("name = 'acne-detector'")
    if stop == "before the version":
        assert versions == []  # a logged model, no version: nothing predict or serve could pick up
    else:
        (version,) = versions
        assert ModelRecord.from_tags(version.tags) == record and not version.description  # whole record, no card
        # predict on that version uses its own record: its threshold, not a default
        info = choose_model(
            weights, ModelRecords(None), parse("predict", {"model": "models:/acne-detector/1"}), parse("grading", {})
        )
        assert info["threshold"] == 0.35 and info["threshold_source"] == "registered acne-detector/1"
    # the next registration completes (a card) or makes the version, and never duplicates it
    with mlflow.start_run():
        RegisteredDetector(name="acne-detector").save({"weights": weights, "record": record, "description": "card"})
    (version,) = client.search_model_versions("name = 'acne-detector'")
    assert version.description == "card" and ModelRecord.from_tags(version.tags) == record


def test_a_changed_record_is_registered_as_a_new_version(store: str, coco_model, tmp_path: Path) -> None:
    weights = tmp_path / "yolov8n.pt"
    shutil.copy(coco_model.ckpt_path, weights)
    dataset = RegisteredDetector(name="acne-detector")
    for threshold in (0.35, 0.35, 0.5):  # eval ran again between the second and third registration
        with mlflow.start_run():
            dataset.save({"weights": weights, "record": _record(weights, threshold)})
    versions = sorted(MlflowClient().search_model_versions("name = 'acne-detector'"), key=lambda v: int(v.version))
    assert [ModelRecord.from_tags(v.tags).threshold for v in versions] == [0.35, 0.5]
    served = mlflow.pyfunc.load_model("models:/acne-detector/2")  # its configuration is the same record
    assert ModelRecord.from_config(served.model_config) == ModelRecord.from_tags(versions[1].tags)
