"""The sweep for real, tiny: recipes trained as Ray Tune trials (a local instance) and as child
MLflow runs of one sweep run, measured on validation, a recipe over budget skipped, a rerun that
reuses what finished; without Ray, the same recipes one after another in the node's process."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from acne_detection.core.params import EvalParams, GradingParams, SweepConfigParams, SweepParams, TrainParams
from acne_detection.framework.tracking import portable_tracking_uri
from acne_detection.pipelines.sweep import runners
from acne_detection.pipelines.sweep.nodes import recipe_key, recipe_settings, run_sweep, training_subset
from acne_detection.pipelines.sweep.plots import plot_sweep
from acne_detection.testing import copy_project
from tests.conftest import kedro_run

RECIPES = {
    "sweep": {
        "budget_minutes": 20,
        "checkpoint_every": 1,
        "configs": [
            {"name": "tiny"},
            {"name": "tiny_half", "train_fraction": 0.5},
            {"name": "huge", "train": {"imgsz": 4096, "epochs": 300}},  # ~days: over any budget
            {"name": "tiny_adamw", "train": {"optimizer": "AdamW", "lr0": 0.001, "augment": {"mosaic": 0.0}}},
        ],
    }
}
TINY = {"train": {"epochs": 2, "imgsz": 64, "batch": 8, "augment": {"close_mosaic": 0}}}


def _run(project: Path, pipeline: str) -> None:
    """``kedro run`` as a user types it (in its own process: MLflow caches a store per URI, and
    the relative SQLite URI of another project's in-process run would be reused here)."""
    done = kedro_run(project, "--pipeline", pipeline)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = copy_project(tmp_path_factory.mktemp("sweep") / "acne-detection", n_images=24, size=128)
    (project / "conf" / "local" / "parameters_sweep.yml").write_text(yaml.safe_dump(RECIPES))
    (project / "conf" / "local" / "parameters_train.yml").write_text(yaml.safe_dump(TINY))
    _run(project, "data")
    _run(project, "sweep")
    results = project / "data" / "08_reporting" / "sweep_results.csv"
    results.replace(results.with_name("first_sweep_results.csv"))  # what the first run said, for a failure's message
    _run(project, "sweep")  # again: every finished recipe is reused, none trained twice
    return project


@pytest.mark.e2e
def test_each_recipe_is_a_child_run_measured_on_validation_and_the_rerun_reuses_them(swept: Path) -> None:
    results = pd.read_csv(swept / "data" / "08_reporting" / "sweep_results.csv")
    status = dict(zip(results.recipe, results.status, strict=True))
    assert status["huge"].startswith("skipped: needs ~") and "of the budget left" in status["huge"]
    first = pd.read_csv(swept / "data" / "08_reporting" / "first_sweep_results.csv")
    assert {status[r] for r in ("tiny", "tiny_half", "tiny_adamw")} == {"reused (trained by an earlier sweep run)"}, (
        first[["recipe", "status"]].to_string()
    )
    done = results.set_index("recipe").loc[["tiny", "tiny_half", "tiny_adamw"]]
    manifest = pd.read_csv(swept / "data" / "03_primary" / "split_manifest.csv")
    train_sources = manifest[manifest.split == "train"].group.nunique()
    assert done.loc["tiny", "train_photos"] == (manifest.split == "train").sum()
    assert done.loc["tiny_half", "train_photos"] < done.loc["tiny", "train_photos"]
    assert done.loc["tiny_half", "train_photos"] >= round(train_sources * 0.5)  # whole sources, every copy
    assert (done.val_photos == (manifest.split == "val").sum()).all()  # measured on validation, never test
    assert done.loc["tiny_adamw", "optimizer"] == "AdamW" and done.loc["tiny_adamw", "mosaic"] == 0.0
    assert ((done.val_mAP50 >= 0) & (done.val_mAP50 <= 1)).all() and done.val_grade_accuracy.notna().all()

    client = MlflowClient(tracking_uri=f"sqlite:///{swept / 'data' / 'mlflow' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("acne_detection")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    parents = [r for r in runs if r.info.run_name.startswith("sweep ·")]
    assert len(parents) == 2
    for parent in parents:
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert sorted(c.data.tags["sweep.recipe"] for c in children) == ["tiny", "tiny_adamw", "tiny_half"]
        assert all(c.info.status == "FINISHED" for c in children)
        adamw = next(c for c in children if c.data.tags["sweep.recipe"] == "tiny_adamw")
        assert adamw.data.params["train.optimizer"] == "AdamW" and adamw.data.params["train.augment.mosaic"] == "0.0"
        assert adamw.data.metrics["val_mAP50"] == pytest.approx(done.loc["tiny_adamw", "val_mAP50"])
        assert {a.path for a in client.list_artifacts(parent.info.run_id, "sweep")} >= {
            "sweep/sweep_results.csv",
            "sweep/sweep.png",
            "sweep/sweep_report.md",
            "sweep/sweep_recipe.yml",
            "sweep/sweep_curves.csv",
        }
    first_children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert all(len(c.data.tags["sweep.node_id"]) == 56 for c in first_children)  # trained on Ray: a node id each
    trained = next(c for c in first_children if c.data.tags["sweep.recipe"] == "tiny")
    assert [m.step for m in client.get_metric_history(trained.info.run_id, "metrics/mAP50B")] == [1, 2]  # live
    assert [m.step for m in client.get_metric_history(trained.info.run_id, "checkpoint/val_mAP50")] == [1, 2]
    second_children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[1].info.run_id]
    reused = next(c for c in second_children if c.data.tags["sweep.recipe"] == "tiny")
    assert reused.data.tags["sweep.status"] == "reused"  # its curve logged again, one point per epoch
    assert [m.step for m in client.get_metric_history(reused.info.run_id, "metrics/mAP50B")] == [1, 2]
    curves = pd.read_csv(swept / "data" / "08_reporting" / "sweep_curves.csv")
    assert curves[curves.recipe == "tiny"].epoch.tolist() == [1, 2]
    recipe = yaml.safe_load((swept / "data" / "08_reporting" / "sweep_recipe.yml").read_text())
    full = done[done.train_fraction >= 1]
    best = full.sort_values(["val_mAP50", "train_minutes"], ascending=[False, True]).index[0]  # ties: the faster
    assert recipe["train"]["optimizer"] == done.loc[best, "optimizer"]
    report = (swept / "data" / "08_reporting" / "sweep_report.md").read_text()
    assert f"**Chosen: `{best}`**" in report and "validation" in report
    assert not list((swept / "runs").glob("*")) if (swept / "runs").exists() else True  # nothing under runs/


def test_recipe_overrides_merge_into_train_and_a_wrong_one_names_the_recipe() -> None:
    base = TrainParams()
    merged = recipe_settings(base, SweepConfigParams(name="r", train={"imgsz": 640, "augment": {"mosaic": 0.5}}))
    assert merged.imgsz == 640 and merged.augment.mosaic == 0.5 and merged.augment.fliplr == base.augment.fliplr
    with pytest.raises(ValueError, match=r"(?s)sweep.configs 'bad'.*imgsize"):
        recipe_settings(base, SweepConfigParams(name="bad", train={"imgsize": 640}))


def test_a_recipe_key_changes_with_what_the_sweep_measures_and_only_with_that() -> None:
    """A finished recipe is reused when only settings the sweep never reads change (the gate,
    calibration, the count correction, the device), and trained again when its measurement changes."""
    train, ev, gr = TrainParams(), EvalParams(), GradingParams()

    def key(**changed) -> str:
        return recipe_key(changed.get("train", train), 1.0, "sha", 4, changed.get("ev", ev), changed.get("gr", gr))

    same = [
        key(ev=EvalParams(calibration={"method": "none"}, gate={"map50": 0.9})),
        key(gr=GradingParams(correct_counts=False)),
        key(train=TrainParams(device="cpu", workers=1)),
    ]
    assert same == [key()] * 3
    moved = [
        key(ev=EvalParams(operating_point={"rule": "recall_target", "recall_target": 0.9})),
        key(ev=EvalParams(iou_threshold=0.6)),
        key(gr=GradingParams(thresholds=(3, 20, 50))),
        key(train=TrainParams(epochs=21)),
    ]
    assert len({key(), *moved}) == 5


def test_shares_of_the_training_photos_are_whole_sources_and_nested(tiny_yolo, tmp_path: Path) -> None:
    dataset, _ = tiny_yolo
    train = dataset.manifest[dataset.manifest.split == "train"]
    groups = pd.Series([f"src{i // 2}" for i in range(len(train))], index=train.index)  # two copies per source
    split = pd.DataFrame({"image_id": train.image_id, "group": groups.values})
    quarter = training_subset(dataset, split, 0.25, 0, tmp_path / "q")
    half = training_subset(dataset, split, 0.5, 0, tmp_path / "h")
    kept = {name: set(s.manifest[s.manifest.split == "train"].image_id) for name, s in (("q", quarter), ("h", half))}
    assert kept["q"] < kept["h"] < set(train.image_id)  # nested shares
    by_source = split.set_index("image_id").group
    for ids in kept.values():  # a source is in whole or not at all
        chosen = set(by_source[list(ids)])
        assert set(split[split.group.isin(chosen)].image_id) == ids
    assert (half.manifest.split != "train").sum() == (dataset.manifest.split != "train").sum()
    spec = yaml.safe_load(half.data_yaml.read_text())
    listed = Path(spec["train"]).read_text().split()
    assert len(listed) == len(kept["h"]) and all(Path(p).is_file() for p in listed)
    assert json.dumps(spec["names"])


FAILING = SweepParams(  # no pretrained weights are given: each trained recipe fails at its start
    budget_minutes=60,
    configs=[
        {"name": "a"},
        {"name": "huge", "train": {"imgsz": 4096, "epochs": 300}},
        {"name": "b", "train": {"lr0": 0.02}},
    ],
)
FAILED = "failed: AttributeError: 'NoneType' object has no attribute 'for_architecture' (its log is above)"


def _failing_sweep(tiny_yolo, workdir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    dataset, ground_truth = tiny_yolo
    split = dataset.manifest.assign(group=dataset.manifest.image_id, grade=0)[["image_id", "group", "grade"]]
    sweep = FAILING.model_copy(update={"workdir": str(workdir)})
    train = TrainParams(epochs=2, imgsz=64)
    return run_sweep(dataset, None, ground_truth, split, sweep, train, EvalParams(), GradingParams())


def test_without_ray_recipes_train_here_one_by_one_and_a_failed_one_is_reported(
    tiny_yolo, tmp_path: Path, monkeypatch
) -> None:
    """Outside a tracked run: no child run; a recipe that fails leaves a row that says why, the
    next one still trains, and each is handed its own settings and the validation split."""
    _, ground_truth = tiny_yolo
    monkeypatch.setattr(runners, "ray_installed", lambda: False)
    started, real = [], runners.train_recipe

    def spy(job):
        started.append(job)
        return real(job)

    monkeypatch.setattr(runners, "train_recipe", spy)
    results, curves = _failing_sweep(tiny_yolo, tmp_path / "sweep")
    assert results.recipe.tolist() == ["a", "huge", "b"]
    assert results.status.tolist()[::2] == [FAILED, FAILED] and results.status[1].startswith("skipped: needs ~")
    assert results.node_id.isna().all() and curves.empty
    # no recipe trained: the curves still save and load with their columns (the catalog's CSV), and the
    # figure is drawn from them, so the sweep's run ends with its table of reasons rather than a load error
    curves.to_csv(tmp_path / "curves.csv", index=False)
    loaded = pd.read_csv(tmp_path / "curves.csv")
    assert loaded.empty and {"recipe", "epoch"} <= set(loaded.columns)
    assert plot_sweep(results, loaded).axes
    assert [job.name for job in started] == ["a", "b"]
    job = started[1]
    assert job.settings.lr0 == 0.02 and job.settings.epochs == 2 and job.run_id is None
    assert job.folder == Path(results.folder[2]) and job.folder.is_absolute()
    assert len(job.val_truth) == (ground_truth.split == "val").sum() and job.checkpoint_every == 5


def test_in_this_process_a_recipe_logs_into_its_child_run_and_the_sweeps_run_stays_active(
    tiny_yolo, coco_weights, tmp_path: Path
) -> None:
    """Without Ray a recipe trains inside the node, whose run (kedro-mlflow's) is active: the
    recipe's curves go to its child run, and the sweep's run is the active one again after."""
    import mlflow

    dataset, ground_truth = tiny_yolo
    split = dataset.manifest.assign(group=dataset.manifest.image_id, grade=0)[["image_id", "group", "grade"]]
    sweep = SweepParams(workdir=str(tmp_path / "sweep"), use_ray=False, checkpoint_every=1, configs=[{"name": "one"}])
    train = TrainParams(epochs=1, imgsz=64, batch=8, augment={"close_mosaic": 0})
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = mlflow.create_experiment("in-process", artifact_location=str(tmp_path / "artifacts"))
    with mlflow.start_run(experiment_id=experiment) as parent:
        results, curves = run_sweep(
            dataset, coco_weights, ground_truth, split, sweep, train, EvalParams(), GradingParams()
        )
        assert mlflow.active_run().info.run_id == parent.info.run_id
    assert results.status.tolist() == ["trained"] and pd.isna(results.node_id[0]) and curves.epoch.tolist() == [1]
    client = MlflowClient()
    child = client.get_run(results.child_run_id[0])
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id and child.info.status == "FINISHED"
    assert "sweep.node_id" not in child.data.tags
    assert [m.step for m in client.get_metric_history(child.info.run_id, "metrics/mAP50B")] == [1]
    assert [m.step for m in client.get_metric_history(child.info.run_id, "checkpoint/val_mAP50")] == [1]
    assert not client.get_metric_history(parent.info.run_id, "metrics/mAP50B")  # nothing leaked into the parent


def test_on_ray_a_failed_trial_is_reported_with_its_node_and_the_others_go_on(tiny_yolo, tmp_path: Path) -> None:
    """The same sweep as Ray Tune trials on a local instance: failed and skipped rows alike."""
    results, curves = _failing_sweep(tiny_yolo, tmp_path / "sweep")
    assert results.recipe.tolist() == ["a", "huge", "b"]
    assert results.status.tolist()[::2] == [FAILED, FAILED] and results.status[1].startswith("skipped: needs ~")
    assert results.node_id[::2].str.len().tolist() == [56, 56] and pd.isna(results.node_id[1]) and curves.empty


def test_trials_reach_a_local_store_by_its_absolute_path_and_a_server_by_its_address(monkeypatch, tmp_path) -> None:
    """A Ray trial starts in its own folder: a relative SQLite URI would open another store there."""
    import mlflow

    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri("sqlite:///data/mlflow/mlflow.db")
    assert portable_tracking_uri() == f"sqlite:///{tmp_path.resolve()}/data/mlflow/mlflow.db"
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    assert portable_tracking_uri() == f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri("http://127.0.0.1:5000")
    assert portable_tracking_uri() == "http://127.0.0.1:5000"


def test_the_budget_is_planned_at_the_rate_an_earlier_sweep_run_measured(tiny_yolo, tmp_path: Path) -> None:
    """Trials may all start at once, so the plan is made first: a recipe an earlier run finished
    in 100 minutes times the others, and one estimated at as long no longer fits in 60."""
    dataset, ground_truth = tiny_yolo
    split = dataset.manifest.assign(group=dataset.manifest.image_id, grade=0)[["image_id", "group", "grade"]]
    sweep = SweepParams(
        workdir=str(tmp_path / "sweep"), budget_minutes=60, use_ray=False, configs=[{"name": "a"}, {"name": "b"}]
    )
    train = TrainParams(epochs=2, imgsz=416)  # REFERENCE_PX: a photo-epoch at the rate itself
    first, _ = run_sweep(dataset, None, ground_truth, split, sweep, train, EvalParams(), GradingParams())
    assert first.status.str.startswith("failed: ").all()  # both fitted at the first guess, 0.15 s a photo-epoch
    finished = {"train_minutes": 100.0, "epochs_run": 2, "best_epoch": 2, "val_mAP50": 0.5, "weights": "w.pt"}
    (Path(first.folder[0]) / "result.json").write_text(json.dumps(finished))
    again, _ = run_sweep(dataset, None, ground_truth, split, sweep, train, EvalParams(), GradingParams())
    assert again.status.tolist() == [
        "reused (trained by an earlier sweep run)",
        "skipped: needs ~100 min, 60 min of the budget left",
    ]


def test_a_recipe_is_estimated_at_the_rate_of_finished_recipes_of_its_own_network(tiny_yolo, tmp_path: Path) -> None:
    """A P2 head costs several times an epoch of the plain network: with one of each finished, a new
    plain recipe is timed by the plain one (100 min: no room in 60) and a new P2 recipe by the P2
    one (10 min: planned). The median of both rates (55 min each) would have planned the plain
    recipe and skipped the P2 one."""
    dataset, ground_truth = tiny_yolo
    split = dataset.manifest.assign(group=dataset.manifest.image_id, grade=0)[["image_id", "group", "grade"]]
    p2 = {"architecture": "yolov8n-p2"}
    configs = [
        {"name": "a"},
        {"name": "p", "train": p2},
        {"name": "b", "train": {"augment": {"scale": 0.2}}},
        {"name": "q", "train": {**p2, "augment": {"scale": 0.2}}},
    ]
    sweep = SweepParams(workdir=str(tmp_path / "sweep"), budget_minutes=60, use_ray=False, configs=configs)
    train = TrainParams(epochs=2, imgsz=416)
    first, _ = run_sweep(dataset, None, ground_truth, split, sweep, train, EvalParams(), GradingParams())
    assert first.status.str.startswith("failed: ").all()
    for folder, minutes in zip(first.folder[:2], (100.0, 10.0)):
        finished = {"train_minutes": minutes, "epochs_run": 2, "best_epoch": 2, "val_mAP50": 0.5, "weights": "w.pt"}
        (Path(folder) / "result.json").write_text(json.dumps(finished))
    again, _ = run_sweep(dataset, None, ground_truth, split, sweep, train, EvalParams(), GradingParams())
    assert again.status.tolist()[:3] == [
        "reused (trained by an earlier sweep run)",
        "reused (trained by an earlier sweep run)",
        "skipped: needs ~100 min, 60 min of the budget left",
    ]
    assert again.status[3].startswith("failed: ")  # planned at ~10 min, then failed (no weights) as in the first run
