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
from kedro.io import DatasetError
from mlflow import MlflowClient

from acne_detection.core.files import sha256_of
from acne_detection.core.grading import GradingRule
from acne_detection.core.params import parse
from acne_detection.datasets import ModelRecords, RegisteredDetector
from acne_detection.model.record import ModelRecord
from acne_detection.ops import fetch_model
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
    # the latest, version 2: its configuration is the same record
    served = RegisteredDetector(name="acne-detector", fetched=str(tmp_path / "fetched")).load()
    assert ModelRecord.from_config(served.model_config) == ModelRecord.from_tags(versions[1].tags)


def test_a_model_fetched_from_the_store_is_copied_once_and_leaves_nothing_in_the_temporary_folder(
    store: str, coco_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """MLflow's own download makes a temporary folder per call that nothing removes: every eval or
    predict of a ``models:/`` or ``runs:/`` model, and every load of the served model, left a copy
    of the weights behind (a test machine's /tmp held 810 MB of them). Here the system's temporary
    folder is a fresh one of the test's, and must stay empty."""
    import gc
    import tempfile

    from acne_detection.framework.tracking import resolve_model

    weights = tmp_path / "yolov8n.pt"
    shutil.copy(coco_model.ckpt_path, weights)
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(weights), "model")  # as train logs its weights
        RegisteredDetector(name="acne-detector").save({"weights": weights, "record": _record(weights, 0.35)})
    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    fetched = tmp_path / "fetched"  # beside the trained weights (predict's `weights`)
    predict = lambda model: parse("predict", {"model": model})  # noqa: E731
    picked = {
        spec: choose_model(weights, ModelRecords(None), predict(spec), parse("grading", {}))["checkpoint"]
        for spec in ("models:/acne-detector/1", "models:/acne-detector/latest", "models:/acne-detector/1")
    }
    copies = lambda: sorted(p for p in fetched.iterdir() if not p.name.startswith("."))  # noqa: E731 - not the locks
    (copy,) = copies()  # one copy of version 1, reused
    assert set(picked.values()) == {str(next(copy.rglob("*.pt")))}
    assert sha256_of(Path(picked["models:/acne-detector/1"])) == sha256_of(weights)
    checkpoint, source = resolve_model(f"runs:/{run.info.run_id}", weights)  # the training run's own copy
    assert sha256_of(checkpoint) == sha256_of(weights) and source == f"runs:/{run.info.run_id}"
    assert checkpoint.parent.parent.parent == fetched and len(copies()) == 2

    # a fetch killed midway left its partial copy: the next fetch of the same model removes it, and a
    # partial copy is never taken for the model
    stale = fetched / f".{copy.name}.partial-killed"
    (stale / "artifacts").mkdir(parents=True)
    shutil.rmtree(copy)
    served = RegisteredDetector(name="acne-detector", fetched=str(fetched)).load()
    assert copy.is_dir() and not stale.exists()
    assert ModelRecord.from_config(served.model_config).threshold == 0.35
    assert list(system_tmp.iterdir()) == []  # nothing left in the system's temporary folder by any of it

    # `make serve`'s fetch: the same copy, its folder printed; of a run's logged model, the model's folder
    assert fetch_model.main(["models:/acne-detector/latest", str(fetched)]) == 0
    printed = lambda: capsys.readouterr().out.strip().splitlines()[-1]  # noqa: E731 - after any log lines
    assert printed() == str(copy) and (copy / "MLmodel").is_file()
    assert fetch_model.main([f"runs:/{run.info.run_id}/model", str(fetched)]) == 0
    assert Path(printed()) == checkpoint.parent

    # without a folder of its own, the served model's copy lives as long as the model
    served = RegisteredDetector(name="acne-detector").load()
    assert len(list(system_tmp.iterdir())) == 1
    del served
    gc.collect()
    assert list(system_tmp.iterdir()) == []


def test_fetching_a_model_the_store_does_not_hold_says_so_in_one_line(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert fetch_model.main(["models:/acne-detector/latest", str(tmp_path / "fetched")]) == 2
    said = capsys.readouterr()
    assert said.out == "" and "Traceback" not in said.err  # one line, after MLflow's own log of the new store
    assert said.err.splitlines()[-1].startswith(
        "Cannot fetch models:/acne-detector/latest: no version of 'acne-detector' is registered in sqlite:///"
    )
    assert fetch_model.main(["models:/acne-detector/3", str(tmp_path / "fetched")]) == 2
    assert "Cannot fetch models:/acne-detector/3: " in capsys.readouterr().err
    assert not (tmp_path / "fetched").exists() or not any((tmp_path / "fetched").iterdir())


def test_a_fetched_copy_is_of_the_model_the_store_holds_now(store: str, coco_model, tmp_path: Path) -> None:
    """A copy is reused only when whole and of the very model: a registry whose version 1 is now
    other weights (the model deleted and registered anew, or a store made anew at the same
    address) gets a copy of its own, not the old version 1's, and a copy emptied by `make
    clean-outputs` (files removed, folders kept) is fetched again."""
    from acne_detection.framework.tracking import fetch_artifacts, resolve_model

    weights, fetched = tmp_path / "acne_yolov8n.pt", tmp_path / "fetched"
    shutil.copy(coco_model.ckpt_path, weights)
    with mlflow.start_run():
        RegisteredDetector(name="acne-detector").save({"weights": weights, "record": _record(weights, 0.35)})
    first, _ = resolve_model("models:/acne-detector/1", weights)
    assert sha256_of(first) == sha256_of(weights)

    MlflowClient().delete_registered_model("acne-detector")  # its next version is 1 again
    other = tmp_path / "other" / "acne_yolov8n.pt"
    other.parent.mkdir()
    other.write_bytes(weights.read_bytes() + b"retrained")
    with mlflow.start_run():
        RegisteredDetector(name="acne-detector").save({"weights": other, "record": _record(other, 0.5)})
    again, _ = resolve_model("models:/acne-detector/1", weights)
    assert sha256_of(again) == sha256_of(other) != sha256_of(weights)

    for file in [f for f in fetched.rglob("*") if f.is_file()]:  # make clean-outputs: files go, folders stay
        file.unlink()
    emptied, _ = resolve_model("models:/acne-detector/1", weights)
    assert emptied == again and sha256_of(emptied) == sha256_of(other)

    with pytest.raises(DatasetError, match="without a path inside it"):
        fetch_artifacts("models:/acne-detector/1/artifacts", fetched)
