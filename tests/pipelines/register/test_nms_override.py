"""A registered ``predict.nms_iou`` that overrides eval's choice is said, with both values."""

from __future__ import annotations

from acne_detection.core.grading import GradingRule
from acne_detection.model.record import ModelRecord
from acne_detection.pipelines.register.nodes import nms_override_warning


def test_an_nms_iou_other_than_evals_is_said_and_null_or_the_same_is_not() -> None:
    record = ModelRecord.default("0" * 64, GradingRule(), nms_iou=0.5, nms_rule="highest validation mAP@50")
    said = nms_override_warning(0.7, record)
    assert "predict.nms_iou 0.70" in said and "eval chose for it, 0.50 (highest validation mAP@50)" in said
    assert nms_override_warning(None, record) == "" and nms_override_warning(0.5, record) == ""
