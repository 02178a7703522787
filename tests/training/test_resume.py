"""Resume after interruption: the decision on crafted checkpoints, and a real killed run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from acne_detection.datasets import PretrainedWeightsSource
from acne_detection.testing import copy_project
from acne_detection.training.resume import plan_resume, prepare_training, record_run
from tests.conftest import PROJECT_ROOT

SETTINGS = {"data": "abc", "model": "yolov8n.pt", "imgsz": 64, "epochs": 4}


def _checkpoint(save_dir: Path, epoch: int) -> None:
    (save_dir / "weights").mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": epoch}, save_dir / "weights" / "last.pt")


def test_resumes_only_an_unfinished_run_with_the_same_settings(tmp_path: Path) -> None:
    run = tmp_path / "train"  # Ultralytics' run folder; the record lives beside it, in the work folder
    assert plan_resume(run, SETTINGS, "auto").reason == "starting fresh (no interrupted run to resume)"
    record_run(tmp_path, SETTINGS, "run-1")
    _checkpoint(run, 1)
    plan = plan_resume(run, SETTINGS, "auto")
    assert plan.resume and plan.completed_epochs == 2 and plan.previous_run_id == "run-1"
    assert plan.reason == "resuming the interrupted run after epoch 2 of 4"
    assert not plan_resume(run, SETTINGS, False).resume
    changed = plan_resume(run, {**SETTINGS, "imgsz": 96, "data": "xyz"}, "auto")
    assert not changed.resume and changed.reason == "starting fresh (changed since the interrupted run: data, imgsz)"
    _checkpoint(run, -1)
    assert plan_resume(run, SETTINGS, "auto").reason == "starting fresh (the previous run finished)"
    (run / "weights" / "last.pt").write_bytes(b"cut short")
    assert "unreadable" in plan_resume(run, SETTINGS, "auto").reason


def test_a_run_stopped_after_its_last_epoch_starts_fresh(tmp_path: Path) -> None:
    """Its last epoch checkpointed, the run stopped before Ultralytics' final steps (the disk
    filled writing ``best.pt``): Ultralytics refuses to resume it ("nothing to resume"), so
    the next run starts over rather than failing (``tests/faults/test_disk_full.py``)."""
    run = tmp_path / "train"
    record_run(tmp_path, SETTINGS, "run-1")
    _checkpoint(run, SETTINGS["epochs"] - 1)
    plan = plan_resume(run, SETTINGS, "auto")
    assert not plan.resume and "trained its last epoch, 4 of 4" in plan.reason
    _checkpoint(run, SETTINGS["epochs"] - 2)  # one epoch left: resumed
    assert plan_resume(run, SETTINGS, "auto").resume


def test_the_record_survives_a_ddp_launch_deleting_the_run_folder(tmp_path: Path) -> None:
    """A fresh DDP launch removes Ultralytics' run folder after the project prepared it; the
    record is outside it, so once checkpoints exist again the run can still be resumed."""
    from types import SimpleNamespace

    from ultralytics.utils.dist import generate_ddp_command

    plan = prepare_training(tmp_path, SETTINGS, "auto", "run-7")
    assert not plan.resume and (tmp_path / "kedro_run.json").exists()
    (tmp_path / "train").mkdir()
    trainer = SimpleNamespace(
        resume=False, save_dir=tmp_path / "train", args=SimpleNamespace(), model=None, callbacks={}, world_size=2
    )
    _, script = generate_ddp_command(trainer)  # what Ultralytics does before spawning workers: rmtree(save_dir)
    Path(script).unlink()
    Path(script).with_suffix(".pt").unlink()
    assert not (tmp_path / "train").exists() and (tmp_path / "kedro_run.json").exists()
    _checkpoint(tmp_path / "train", 1)  # the workers checkpoint epoch 2, then the job is killed
    again = prepare_training(tmp_path, SETTINGS, "auto", "run-8")
    assert again.resume and again.previous_run_id == "run-7" and again.completed_epochs == 2


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project on 24 synthetic photos, its data pipeline already run."""
    root = tmp_path_factory.mktemp("resume") / "acne-detection"
    base = yaml.safe_load((PROJECT_ROOT / "conf" / "base" / "catalog.yml").read_text())["pretrained_weights"]
    source = PretrainedWeightsSource(
        **{k: v for k, v in base.items() if k != "type"},
    ).load()
    cached, _ = replace(source, cache=root.parent / "weights" / "yolov8n.pt").resolve()
    copy_project(root, n_images=24, size=128, catalog={"pretrained_weights": {"local_path": str(cached)}})
    subprocess.run(_kedro("data"), cwd=root, check=True, capture_output=True)
    return root


# enough epochs (about 2 s each here) that a loaded machine still sees a checkpoint before the end
EPOCHS = 8


def _kedro(pipeline: str) -> list[str]:
    return [
        str(Path(sys.executable).parent / "kedro"),
        "run",
        "--pipeline",
        pipeline,
        "--params",
        f"train.epochs={EPOCHS},train.imgsz=64,train.batch=8",
    ]


def _finished_epochs(last: Path) -> int:
    try:
        return int(torch.load(last, map_location="cpu", weights_only=False).get("epoch", -1)) + 1
    except Exception:
        return 0


@pytest.mark.e2e
def test_a_killed_run_resumes_and_ends_with_one_point_per_epoch(project: Path) -> None:
    last = project / "data" / "06_models" / "ultralytics" / "train" / "weights" / "last.pt"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "400"}  # one log record per line
    first = subprocess.Popen(
        _kedro("train"),
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while not (last.exists() and _finished_epochs(last) >= 1):
        assert first.poll() is None, "training ended before it could be interrupted"
        assert time.monotonic() < deadline, "no checkpoint after 300 s"
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)  # like a power cut: no clean-up of any kind
    first.wait()
    done_before = _finished_epochs(last)
    assert 1 <= done_before < EPOCHS

    second = subprocess.run(_kedro("train"), cwd=project, capture_output=True, text=True, env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    said = [line.strip() for line in (second.stdout + second.stderr).splitlines() if "Training: " in line]
    assert said and "Training: resuming the interrupted run after epoch" in said[0], said

    history = (project / "data" / "08_reporting" / "training_history.csv").read_text().splitlines()
    assert [int(float(line.split(",")[0])) for line in history[1:]] == list(range(1, EPOCHS + 1))
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'data' / 'mlflow' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("acne_detection")
    killed, resumed = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])[-2:]
    assert resumed.data.tags["resumed_from_run"] == killed.info.run_id
    assert killed.info.status == "KILLED"  # not RUNNING forever in the UI
    assert resumed.info.status == "FINISHED"
    for metric in ("train/box_loss", "val/cls_loss", "metrics/mAP50B"):
        steps = [m.step for m in client.get_metric_history(resumed.info.run_id, metric)]
        assert steps == list(range(1, EPOCHS + 1)), metric
