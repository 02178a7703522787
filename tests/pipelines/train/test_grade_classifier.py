"""The grade classifier: trained for real (tiny) from the COCO backbone on the graded photos, every
photo scored the same from a path as from its bytes, and its checkpoint found by SHA-256 where
the grade model reads it (registration, predict), or a clear refusal."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from kedro.io import DatasetError

from acne_detection.core.params import parse
from acne_detection.datasets import PretrainedWeightsSource
from tests.conftest import PROJECT_ROOT


@pytest.fixture(scope="module")
def trained(tiny_yolo, tmp_path_factory: pytest.TempPathFactory):
    from acne_detection.pipelines.train.grade_classifier import train_grade_classifier

    dataset, _ = tiny_yolo
    base = yaml.safe_load((PROJECT_ROOT / "conf" / "base" / "catalog.yml").read_text())["pretrained_weights"]
    source = PretrainedWeightsSource(**{k: v for k, v in base.items() if k != "type"}).load()
    weights = replace(source, cache=tmp_path_factory.mktemp("weights") / "yolov8n.pt")
    split_images = dataset.manifest[["image_id"]].assign(grade=[str(i % 2) for i in range(len(dataset.manifest))])
    params = parse("grade_classifier", {"min_photos": 2, "epochs": 2, "imgsz": 32, "batch": 4, "workers": 0})
    workdir = tmp_path_factory.mktemp("work")
    record = train_grade_classifier(dataset, split_images, weights, workdir, params, parse("grading", {}))
    return dataset, split_images, record


def test_the_classifier_trains_on_the_graded_photos_and_scores_every_photo(trained) -> None:
    from ultralytics import YOLO

    from acne_detection.core.files import sha256_of
    from acne_detection.core.grade_classifier import grade_scores
    from acne_detection.pipelines.eval.grading import score_photos

    dataset, split_images, record = trained
    assert Path(record["weights"]).is_file() and record["sha256"] == sha256_of(Path(record["weights"]))
    graded = dataset.manifest[dataset.manifest.split.isin(["train", "val"])].split.value_counts().to_dict()
    assert record["photos"] == graded and record["grades"] == 4
    # the last epoch is kept, not the one that scored best on the validation photos, which choose the grade model
    run = Path(record["weights"]).parent / "train"
    assert record["sha256"] == sha256_of(run / "weights" / "last.pt")
    epochs = pd.read_csv(run / "results.csv").rename(columns=str.strip)
    assert len(epochs) == 2 and record["val_top1"] == pytest.approx(epochs["metrics/accuracy_top1"].iloc[-1])
    scores = score_photos(record, dataset, parse("grading", {}))
    assert list(scores.index) == list(dataset.manifest.image) and list(scores.columns) == [f"cls.{k}" for k in range(4)]
    assert scores.sum(axis=1).to_numpy() == pytest.approx(np.ones(len(scores)))
    assert (scores[["cls.2", "cls.3"]] == 0).all().all()  # grades it never saw get nothing
    # Ultralytics' integrations (its MLflow callback would end kedro-mlflow's run) are off
    from acne_detection.pipelines.train.grade_classifier import ProjectClassificationTrainer
    from acne_detection.training.trainers import _third_party

    folders = Path(record["weights"]).parent / "folders"
    overrides = {"data": str(folders), "model": "yolov8n-cls.yaml", "project": str(folders.parent), "name": "probe"}
    trainer = ProjectClassificationTrainer(overrides=overrides)
    assert not [f for funcs in trainer.callbacks.values() for f in funcs if _third_party(f)]
    # the served model sends bytes, predict paths: the same pixels, the same scores
    model = YOLO(record["weights"], task="classify")
    photos = [dataset.root / image for image in dataset.manifest.image[:3]]
    by_path = grade_scores(model, [(p.name, p) for p in photos], n_grades=4, imgsz=32)
    by_bytes = grade_scores(model, [(p.name, p.read_bytes()) for p in photos], n_grades=4, imgsz=32)
    assert by_path.to_numpy() == pytest.approx(by_bytes.to_numpy())


def test_too_few_graded_photos_train_no_classifier_and_say_why(tiny_yolo, tmp_path: Path) -> None:
    from acne_detection.pipelines.train.grade_classifier import train_grade_classifier

    dataset, _ = tiny_yolo
    ungraded = dataset.manifest[["image_id"]].assign(grade="")
    record = train_grade_classifier(
        dataset, ungraded, None, tmp_path, parse("grade_classifier", {}), parse("grading", {})
    )
    assert record["weights"] == "" and "too few to train a grade classifier" in record["reason"]
    off = train_grade_classifier(
        dataset, ungraded, None, tmp_path, parse("grade_classifier", {"enabled": False}), parse("grading", {})
    )
    assert off["reason"] == "grade_classifier.enabled is false"


def test_the_classifier_the_grade_model_reads_is_found_by_its_sha256_or_refused(trained, tmp_path: Path) -> None:
    from acne_detection.datasets.weights import grade_classifier_checkpoint
    from acne_detection.pipelines.predict.nodes import _find_classifier

    _, _, record = trained
    model = {"kind": "logistic", "columns": ["n@0.05", "cls.0"], "classifier": {"sha256": record["sha256"]}}
    registered = [Path(record["weights"])]  # what registration tries: the classifier train made
    assert grade_classifier_checkpoint(model, registered) == Path(record["weights"])
    assert grade_classifier_checkpoint({"kind": "rule"}, registered) is None
    assert _find_classifier(model, tmp_path / "detector.pt", record) == record["weights"]
    assert _find_classifier({**model, "columns": ["n@0.05"]}, tmp_path / "detector.pt", record) == ""
    other = {**model, "classifier": {"sha256": "0" * 64}}
    with pytest.raises(FileNotFoundError, match="grade classifier 000000000000"):
        grade_classifier_checkpoint(other, registered)
    with pytest.raises(DatasetError, match="grade classifier 000000000000"):
        _find_classifier(other, tmp_path / "detector.pt", record)


def test_a_grade_model_reading_the_classifier_needs_its_scores() -> None:
    from acne_detection.core.grade_model import GradeModel, Recipe, _fit_logistic, photo_features

    scores = pd.DataFrame({"cls.0": [0.9, 0.2], "cls.1": [0.1, 0.8]}, index=pd.Index(["a", "b"], name="image"))
    boxes = pd.DataFrame(columns=["image", "class", "confidence", "x_min", "y_min", "x_max", "y_max"])
    features = photo_features(boxes, ["a", "b"], scores=scores)
    columns = ["n@0.05", "cls.0", "cls.1"]
    fitted = _fit_logistic(features[columns].to_numpy(), np.array([0, 1]), 2, Recipe(c=10.0))
    model = GradeModel(kind="logistic", names=("mild", "severe"), columns=tuple(columns), fitted=fitted)
    assert model.uses_classifier
    with pytest.raises(ValueError, match="grade classifier"):
        model.probabilities(boxes, ["a", "b"])
    assert model.grades(model.probabilities(boxes, ["a", "b"], scores=scores)).tolist() == [0, 1]
    with pytest.raises(ValueError, match="scored no"):
        photo_features(boxes, ["a", "c"], scores=scores)
