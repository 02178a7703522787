"""Evaluation nodes on a real tiny dataset with crafted predictions (no model needed)."""

from __future__ import annotations

import pandas as pd
import pytest
from kedro.io import DatasetError

from acne_detection.pipelines.eval.nodes import (
    check_quality_gate, choose_operating_point, evaluate_detections, fingerprint_inputs, plot_error_gallery,
    plot_threshold_curves, report_headline, sweep_thresholds,
)


@pytest.fixture
def crafted(tiny_yolo):
    """Predictions: every test lesion found at confidence 0.9, plus false alarms at 0.3."""
    dataset, ground_truth = tiny_yolo
    gt = ground_truth[ground_truth.split == "test"]
    hits = gt.assign(confidence=0.9)[["image", "class_id", "confidence", "x_min", "y_min", "x_max", "y_max"]]
    alarms = hits.head(3).assign(confidence=0.3, x_min=0.0, y_min=0.0, x_max=3.0, y_max=3.0)
    preds = pd.concat([hits, alarms], ignore_index=True)
    preds.insert(2, "class", preds.class_id.map(dict(enumerate(dataset.names))))
    return dataset, ground_truth, preds


def test_sweep_operating_point_and_metrics(crafted) -> None:
    dataset, ground_truth, preds = crafted
    params = {}
    sweep = sweep_thresholds(preds, ground_truth, dataset, params)
    overall = sweep[sweep["class"] == "all"].set_index("threshold")
    assert overall.loc[0.25, "recall"] == 1.0 and overall.loc[0.25, "fp"] == 3
    assert overall.loc[0.35, "precision"] == 1.0 and overall.loc[0.95, "recall"] == 0.0
    point = choose_operating_point(sweep, params)
    assert 0.3 < point["threshold"] <= 0.9 and point["f1"] == 1.0
    strict_recall = choose_operating_point(sweep, {"operating_point": {"rule": "recall_target", "recall_target": 0.85}})
    assert strict_recall["threshold"] == 0.9 and strict_recall["recall"] == 1.0
    per_class, confusion, headline = evaluate_detections(preds, ground_truth, dataset, point, params)
    assert headline["mAP50"] == pytest.approx(1.0) and headline["recall"] == 1.0 and headline["precision"] == 1.0
    assert confusion.set_index("true").loc["background"].sum() == 0  # no false alarm above the threshold
    gate = check_quality_gate(headline, params)
    assert gate["gate"] == "pass"
    text = report_headline(per_class, point, gate)
    assert "Quality gate: **PASS**" in text and "pycocotools" in text
    assert len(plot_threshold_curves(sweep, point).axes) == 4
    assert plot_error_gallery(preds, ground_truth, dataset, point, {"gallery_size": 2}).axes


def test_gate_fails_loudly_only_when_strict() -> None:
    weak = {"mAP50": 0.7, "recall": 0.9, "precision": 0.8}
    verdict = check_quality_gate(weak, {})
    assert verdict["gate"] == "fail" and verdict["gate.mAP50"].startswith("fail (0.700 < 0.80)")
    assert verdict["gate.recall"].startswith("pass")
    with pytest.raises(DatasetError, match="Quality gate failed"):
        check_quality_gate(weak, {"gate": {"strict": True}})


def test_lineage_tags_hash_the_manifest(tiny_yolo) -> None:
    dataset, _ = tiny_yolo
    tags = fingerprint_inputs(dataset, {"mlflow_run_id": "abc"}, {})
    assert tags["model_run_id"] == "abc" and len(tags["dataset_manifest_sha256"]) == 64
    shuffled = type(dataset)(dataset.root, dataset.data_yaml, dataset.names, dataset.manifest.sample(frac=1, random_state=0))
    assert fingerprint_inputs(shuffled, {}, {})["dataset_manifest_sha256"] == tags["dataset_manifest_sha256"]
    other = fingerprint_inputs(dataset, {"mlflow_run_id": "abc"}, {"model": "runs:/f00d/"})
    assert (other["model_source"], other["model_run_id"]) == ("runs:/f00d/", "f00d")
