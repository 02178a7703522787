"""The NMS IoU eval chose travels with the model: the predictor answers at its record's, unless
``predict.nms_iou`` names another."""

from __future__ import annotations

from pathlib import Path

from acne_detection.core.files import sha256_of
from acne_detection.core.grading import GradingRule
from acne_detection.core.params import PredictParams
from acne_detection.model.predictor import Predictor
from acne_detection.model.record import ModelRecord

BUS = Path(__import__("ultralytics").__file__).parent / "assets" / "bus.jpg"


def _found(weights: Path, predict: PredictParams, nms_iou: float) -> tuple[float, int]:
    record = ModelRecord.default(sha256_of(weights), GradingRule(), threshold=0.05, nms_iou=nms_iou)
    predictor = Predictor.load(record, weights, predict)
    assert predictor.adjusted(predict, threshold=0.1).settings.iou == predictor.settings.iou  # a request keeps it
    (boxes,) = predictor.boxes([("bus", BUS)])
    return predictor.settings.iou, len(boxes.counted)


def test_the_predictor_suppresses_at_its_records_nms_iou(coco_model) -> None:
    """COCO's model on Ultralytics' bus photo at a low confidence: overlapping boxes of one
    object (person, bus) survive a loose NMS and are dropped by a strict one."""
    weights = Path(coco_model.ckpt_path)
    loose_iou, loose = _found(weights, PredictParams(runtime="torch"), 0.9)
    strict_iou, strict = _found(weights, PredictParams(runtime="torch"), 0.2)
    assert (loose_iou, strict_iou) == (0.9, 0.2)
    assert loose > strict  # the record's IoU reached Ultralytics' NMS
    # predict.nms_iou, when set, is what the user asked for: it overrides the record's
    asked_iou, asked = _found(weights, PredictParams(runtime="torch", nms_iou=0.2), 0.9)
    assert (asked_iou, asked) == (0.2, strict)
