"""The sweep on a real two-node Ray cluster (``tests/ray_cluster.py``: a head and a second node,
separate processes on 127.0.0.1, one CPU each): with one CPU per trial, two recipes can only
run at once on two nodes. Every trial logs into its child run from its own node, and the rows,
the child runs and the choice reconcile."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from acne_detection.core.params import EvalParams, GradingParams, SweepParams, TrainParams
from acne_detection.pipelines.sweep.nodes import choose_recipe, recipe_yaml, run_sweep
from tests.ray_cluster import RayCluster, ray_cluster  # noqa: F401 - the fixture

TWO_RECIPES = {
    "budget_minutes": 60,
    "checkpoint_every": 1,
    "resources": {"cpus": 1, "gpus": 0},  # each node has one CPU: one trial per node
    "configs": [{"name": "sgd"}, {"name": "adamw", "train": {"optimizer": "AdamW", "lr0": 0.001}}],
}
TINY = TrainParams(epochs=1, imgsz=64, batch=8, augment={"close_mosaic": 0})


def test_a_sweep_on_two_nodes_trains_one_recipe_on_each_and_everything_reconciles(
    ray_cluster: RayCluster,  # noqa: F811 - the fixture imported above
    tiny_yolo,
    coco_weights,
    tmp_path: Path,
    monkeypatch,
) -> None:
    monkeypatch.setenv("RAY_ADDRESS", ray_cluster.address)
    dataset, ground_truth = tiny_yolo
    split = dataset.manifest.assign(group=dataset.manifest.image_id, grade=0)[["image_id", "group", "grade"]]
    sweep = SweepParams(workdir=str(tmp_path / "sweep"), **TWO_RECIPES)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = mlflow.create_experiment("sweep-on-ray", artifact_location=str(tmp_path / "artifacts"))
    with mlflow.start_run(experiment_id=experiment) as parent:
        results, curves = run_sweep(
            dataset, coco_weights, ground_truth, split, sweep, TINY, EvalParams(), GradingParams()
        )

    rows = results.set_index("recipe")
    assert rows.status.tolist() == ["trained", "trained"], rows.status.tolist()
    assert set(rows.node_id) == {ray_cluster.head_id, ray_cluster.second_id}  # one trial on each node
    client = MlflowClient()
    children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(c.data.tags["sweep.recipe"] for c in children) == ["adamw", "sgd"]
    for child in children:
        recipe = child.data.tags["sweep.recipe"]
        assert child.info.status == "FINISHED" and child.info.run_id == rows.loc[recipe, "child_run_id"]
        assert child.data.tags["sweep.node_id"] == rows.loc[recipe, "node_id"]
        assert child.data.metrics["val_mAP50"] == pytest.approx(rows.loc[recipe, "val_mAP50"])
        # logged live by the trial, on its node, into the store the sweep's run uses
        assert [m.step for m in client.get_metric_history(child.info.run_id, "metrics/mAP50B")] == [1]
        assert [m.step for m in client.get_metric_history(child.info.run_id, "checkpoint/val_mAP50")] == [1]
    assert sorted(curves.recipe.unique()) == ["adamw", "sgd"] and (curves.epoch == 1).all()
    block, report = choose_recipe(results, sweep, TINY)
    best = rows.assign(m=rows.train_minutes).sort_values(["val_mAP50", "m"], ascending=[False, True]).index[0]
    assert f"**Chosen: `{best}`**" in report
    assert yaml.safe_load(recipe_yaml(block))["train"]["optimizer"] == rows.loc[best, "optimizer"]
    assert pd.notna(rows.val_grade_accuracy).all()
