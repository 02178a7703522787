"""A grading rule set only in config (five grades, other thresholds) reaches every place a grade
is shown: eval's grading tables, predict's summary, annotated copies and report (legend and a
colour per grade), and the registered model's answer. Nothing in the code knows ACNE04's four."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from acne_detection.testing import copy_project
from tests.conftest import kedro_run

NAMES = ["clear", "almost clear", "mild", "moderate", "severe"]
TINY = "train.epochs=1,train.imgsz=64,train.batch=8,preview.samples=4"


@pytest.fixture(scope="module")
def five(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = copy_project(tmp_path_factory.mktemp("five") / "acne-detection", n_images=24, size=128)
    (project / "conf" / "local" / "parameters_grading.yml").write_text(
        yaml.safe_dump({"grading": {"thresholds": [1, 3, 6, 12], "names": NAMES}})
    )
    done = kedro_run(project, "--params", TINY)
    assert done.returncode == 0, done.stderr[-3000:]
    photos = project.parent / "photos"
    photos.mkdir()
    for image in sorted((project / "data" / "05_model_input" / "yolo" / "test" / "images").iterdir())[:2]:
        (photos / image.name).write_bytes(image.read_bytes())
    catalog = yaml.safe_load((project / "conf" / "local" / "catalog.yml").read_text())
    catalog["new_photos"] = {"type": "acne_detection.datasets.PhotoFolder", "path": str(photos)}
    (project / "conf" / "local" / "catalog.yml").write_text(yaml.safe_dump(catalog))
    done = kedro_run(project, "--pipeline", "predict", "--params", "predict.threshold=0.01")
    assert done.returncode == 0, done.stderr[-3000:]
    return project


@pytest.mark.e2e
def test_eval_grades_by_the_five_grades_of_the_config(five: Path) -> None:
    reporting = five / "data" / "08_reporting"
    confusion = pd.read_csv(reporting / "grade_confusion_matrix.csv", index_col=0)
    assert list(confusion.columns) == NAMES and list(confusion.index) == NAMES
    metrics = json.loads((reporting / "grading_metrics.json").read_text())
    recalls = {key.removeprefix("grade_recall.") for key in metrics if key.startswith("grade_recall.")}
    assert recalls and recalls <= set(NAMES)
    grades = pd.read_csv(five / "data" / "07_model_output" / "test_grades.csv")
    assert grades.pred_grade.between(0, 4).all() and grades.count_grade.max() <= 4
    # the true count graded by the config's rule: 0-1 clear ... more than 12 severe
    expected = pd.cut(grades.true_count, [-1, 1, 3, 6, 12, 10**6], labels=False)
    assert (grades.count_grade == expected).all()


@pytest.mark.e2e
def test_predict_summary_and_report_show_five_grades(five: Path) -> None:
    out = five / "data" / "07_model_output" / "predictions"
    summary = pd.read_csv(out / "summary.csv")
    assert [c for c in summary.columns if c.startswith("p.")] == [f"p.{n}" for n in NAMES]
    assert summary.grade_name.isin(NAMES).all() and len(summary) == 2
    assert (summary[[f"p.{n}" for n in NAMES]].sum(axis=1) - 1).abs().max() < 1e-3
    shown = summary[[f"p.{n}" for n in NAMES]].to_numpy()
    assert (summary.grade == shown.argmax(axis=1)).all()  # the grade shown is the most probable one
    report = (out / "report.html").read_text()
    assert "0-1 clear, 2-3 almost clear, 4-6 mild, 7-12 moderate, more than 12 severe" in report
    assert ".g4{border-left-color:#cc2222}" in report and ".g0{border-left-color:#33aa33}" in report
    assert "very severe" not in report


@pytest.mark.e2e
def test_the_registered_model_answers_with_five_grades(five: Path, tmp_path: Path) -> None:
    import base64

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{five / 'data' / 'mlflow' / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model("models:/acne-detector/1", dst_path=str(tmp_path))
    photo = next((five.parent / "photos").iterdir())
    answer = model.predict(
        pd.DataFrame({"image_b64": [base64.b64encode(photo.read_bytes()).decode()]}), params={"conf": 0.01}
    )
    row = answer.iloc[0]
    assert list(json.loads(row.grade_probabilities)) == NAMES
    assert row.grade_name == NAMES[row.grade]
    probabilities = list(json.loads(row.grade_probabilities).values())
    assert row.grade == max(range(len(NAMES)), key=probabilities.__getitem__)


@pytest.mark.e2e
def test_predict_under_another_rule_refuses_naming_both_rules(five: Path) -> None:
    """A model graded under the five-grade rule, predicted under the default rule: a refusal that
    names both rules, before any photo is predicted, never a bare ValueError."""
    grading = five / "conf" / "local" / "parameters_grading.yml"
    kept = grading.read_text()
    grading.unlink()
    try:
        done = kedro_run(five, "--pipeline", "predict")
    finally:
        grading.write_text(kept)
    assert done.returncode != 0
    assert "GradeRuleMismatch" in done.stderr
    assert "0-1 clear, 2-3 almost clear" in done.stderr and "0-5 mild, 6-20 moderate" in done.stderr
    assert "Running node: predict_new_photos" not in done.stdout + done.stderr  # refused before any photo
