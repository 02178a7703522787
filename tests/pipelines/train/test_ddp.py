"""Multi-GPU (DDP) training, tested on CPU where it can be: the state and script Ultralytics
generates for its DDP workers rebuild the project's trainer with the project's callbacks, and
those callbacks, in a fresh process with no active MLflow run and no Kedro session, log into
the intended run at rank 0 and stay silent at rank 1. (The launch itself, ``torch.distributed.run``
over two GPUs, needs two GPUs: see README, "Scaling out".)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from acne_detection.framework.live_metrics import LiveMetrics
from acne_detection.testing import free_port
from acne_detection.training.detector import parameter_counts
from acne_detection.training.trainers import ProjectTrainer

REPORT = """
import json, sys
report = {"trainer": type(trainer).__qualname__,
          "callbacks": sorted({f.__module__ for fs in trainer.callbacks.values() for f in fs})}
MODE
print("REPORT " + json.dumps(report))
"""
TRAIN = """trainer.train()
report["trainable"] = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
"""
ONE_EPOCH_BY_HAND = """import torch
trainer.epoch, trainer.tloss, trainer.epoch_time = 0, torch.tensor([1.0, 2.0, 3.0]), None
trainer.metrics, trainer.lr = {"metrics/mAP50(B)": 0.5}, {"lr/pg0": 0.01}
for event in ("on_train_start", "on_train_epoch_start", "on_fit_epoch_end"):
    trainer.run_callbacks(event)
"""


@pytest.fixture
def ddp_state(tiny_yolo, tmp_path: Path):
    """The files Ultralytics writes before spawning DDP workers, for a trainer set up as
    ``train_detector`` sets it up: the project's trainer class, its live-metric callbacks
    bound to an MLflow run (by id and URI), a model built as ``Model.train`` builds it."""
    from ultralytics import YOLO
    from ultralytics.utils.dist import generate_ddp_file

    dataset, _ = tiny_yolo
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("ddp", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(experiment).info.run_id
    model = YOLO("yolov8n.yaml")  # a random init: no weights to fetch
    for event, callback in LiveMetrics(run_id, uri, {"device": "cuda:0,1"}).callbacks().items():
        model.add_callback(event, callback)
    overrides = {
        "model": "yolov8n.yaml",
        "data": str(dataset.data_yaml),
        "epochs": 1,
        "imgsz": 64,
        "batch": 4,
        "device": "cpu",
        "workers": 0,
        "project": str(tmp_path / "work"),
        "name": "train",
        "exist_ok": True,
        "plots": False,
        "freeze": 10,
        "val": True,
    }
    trainer = ProjectTrainer(overrides=overrides, _callbacks=model.callbacks)
    trainer.model = trainer.get_model(cfg="yolov8n.yaml", weights=None)
    script = Path(generate_ddp_file(trainer))
    yield {
        "script": script,
        "state": script.with_suffix(".pt"),
        "client": client,
        "uri": uri,
        "run_id": run_id,
        "experiment": experiment,
        "parent": trainer,
    }
    script.unlink(missing_ok=True)
    script.with_suffix(".pt").unlink(missing_ok=True)


def _worker(script: Path, mode: str, rank: int, tmp_path: Path) -> dict:
    """Run Ultralytics' generated worker script in a fresh process as DDP rank ``rank`` would
    (``RANK``/``LOCAL_RANK`` set, no MLflow run, no Kedro), with a report line appended."""
    text = script.read_text().replace("    trainer.train()\n", "")
    if mode == TRAIN:  # a one-process gloo group: rank 0's data loader is a DistributedSampler, as in DDP
        text = text.replace(
            'if __name__ == "__main__":\n',
            'if __name__ == "__main__":\n    import torch.distributed as dist\n'
            '    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:%d", rank=0, world_size=1)\n'
            % free_port(),
        )
    body = REPORT.replace("MODE", mode)
    runner = tmp_path / f"worker_rank{rank}.py"
    runner.write_text(text + "".join(f"    {line}\n" for line in body.strip().splitlines()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="1" if mode == TRAIN else "2", PYTHONUNBUFFERED="1")
    done = subprocess.run(
        [sys.executable, str(runner)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(next(line for line in done.stdout.splitlines() if line.startswith("REPORT "))[7:])


def test_the_ddp_state_carries_the_project_trainer_and_callbacks(ddp_state) -> None:
    from ultralytics.utils.patches import torch_load

    state = torch_load(str(ddp_state["state"]), map_location="cpu")
    assert state["trainer"] is ProjectTrainer
    owners = {type(getattr(f, "__self__", None)).__name__ for fs in state["callbacks"].values() for f in fs}
    assert "LiveMetrics" in owners
    live = next(
        f.__self__ for f in state["callbacks"]["on_fit_epoch_end"] if type(getattr(f, "__self__", None)) is LiveMetrics
    )
    assert (live.run_id, live.tracking_uri) == (ddp_state["run_id"], ddp_state["uri"])


@pytest.mark.e2e
def test_rank0_trains_and_logs_into_the_intended_run_and_rank1_stays_silent(ddp_state, tmp_path: Path) -> None:
    client, run_id = ddp_state["client"], ddp_state["run_id"]
    rank0 = _worker(ddp_state["script"], TRAIN, 0, tmp_path)
    assert rank0["trainer"] == "ProjectTrainer"
    # rebuilt in the worker: Ultralytics' no-op defaults and the project's callbacks, no integration or usage event
    assert set(rank0["callbacks"]) == {
        "ultralytics.utils.callbacks.base",
        "acne_detection.framework.live_metrics",
    }
    for metric in ("train/box_loss", "val/cls_loss", "metrics/mAP50B", "lr/pg0"):
        assert [m.step for m in client.get_metric_history(run_id, metric)] == [1], metric
    assert "best/metrics/mAP50B" in client.get_run(run_id).data.metrics  # the final re-validation, logged once
    assert client.get_run(run_id).data.tags["device"] == "cuda:0,1"
    # the launching process never sets the model up: its requires_grad flags are all on, the rule is right
    parent = ddp_state["parent"].model
    assert sum(p.numel() for p in parent.parameters() if p.requires_grad) != rank0["trainable"]
    assert parameter_counts(parent, 10)[1] == rank0["trainable"]

    before = client.get_run(run_id).data
    rank1 = _worker(ddp_state["script"], ONE_EPOCH_BY_HAND, 1, tmp_path)
    assert rank1["trainer"] == "ProjectTrainer"
    after = client.get_run(run_id).data
    assert after.metrics == before.metrics and after.tags == before.tags  # nothing logged from rank 1
    assert [m.step for m in client.get_metric_history(run_id, "train/box_loss")] == [1]


def test_callbacks_log_one_point_per_epoch_and_the_final_validation_once(tmp_path: Path) -> None:
    """Event order tells the best checkpoint's re-validation from an epoch (no flag on the trainer)."""
    from types import SimpleNamespace

    import torch

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    run_id = client.create_run(client.create_experiment("cb")).info.run_id
    live = LiveMetrics(run_id, uri, {"device": "cpu"})
    trainer = SimpleNamespace(
        tloss=torch.tensor([1.0, 2.0, 3.0]),
        epoch_time=None,
        lr={"lr/pg0": 0.01},
        label_loss_items=lambda loss, prefix: {f"{prefix}/box_loss": float(loss[0])},
    )
    live.on_train_start(trainer)
    for epoch in range(2):
        live.on_train_epoch_start(trainer)
        trainer.epoch, trainer.metrics = epoch, {"metrics/mAP50(B)": 0.1 * (epoch + 1)}
        live.on_fit_epoch_end(trainer)
    trainer.epoch, trainer.metrics = 2, {"metrics/mAP50(B)": 0.2}  # final_eval bumps the epoch, then reports
    live.on_fit_epoch_end(trainer)
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "metrics/mAP50B")] == [(1, 0.1), (2, 0.2)]
    assert client.get_run(run_id).data.metrics["best/metrics/mAP50B"] == 0.2
    assert LiveMetrics(None, uri, {}).callbacks()  # tracking off: callbacks exist and do nothing
    LiveMetrics(None, uri, {}).on_fit_epoch_end(trainer)
