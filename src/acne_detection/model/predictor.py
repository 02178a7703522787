"""The predictor: photos in; lesions, counts, grades and grade probabilities out.

One class, in the spirit of Ultralytics' per-task predictors, that the ``predict`` pipeline, the
served MLflow model, ``register``'s export and the benchmarks all use. It holds the detector on
its runtime (one table: ``core.runtimes``), the inference settings (slicing, the skin mask's
tile skipping, batching: ``core.inference``), the calibration the threshold is on, the grade
model of the model record, and the grade classifier where the grade model reads one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from acne_detection.core.calibration import Calibration
from acne_detection.core.files import sha256_of
from acne_detection.core.grade_model import GradeModel
from acne_detection.core.grading import GradingRule, describe_grade_probabilities
from acne_detection.core.inference import PREDICTION_COLUMNS, InferenceSettings, iter_predictions, model_imgsz
from acne_detection.core.params import SERVED_PREDICT_SETTINGS, PredictParams
from acne_detection.core.runtimes import load_detector, runtime_entry
from acne_detection.model.record import ModelRecord

logger = logging.getLogger(__name__)
Photo = tuple[str, Any]  # (key, a path, the file's bytes or RGB pixels)


class ModelChoice(BaseModel):
    """The model a prediction uses, where it came from and the threshold it answers at.

    Attributes:
        checkpoint: the weights' local path.
        source: how it was named (``trained_weights``, a path, ``runs:/``, ``models:/``).
        model_version: the registry's version ("acne-detector/3"), else ``source``.
        threshold: the calibrated confidence lesions are counted at.
        threshold_source: where that threshold came from, in words.
        grade_classifier: the grade classifier's checkpoint, when the grade model reads it; "" otherwise.
        record: the model record (calibration, grade model, rule, training provenance).
    """

    model_config = ConfigDict(frozen=True, protected_namespaces=())

    checkpoint: str
    source: str
    model_version: str
    threshold: float
    threshold_source: str
    grade_classifier: str = ""
    record: ModelRecord

    @classmethod
    def of_checkpoint(cls, weights: Path, predict: PredictParams, *, threshold: float, source: str) -> ModelChoice:
        """A checkpoint with a default record (the default grading rule, no calibration) at
        ``threshold``, under ``predict``'s served settings: a model that was never evaluated,
        as benchmarks and tests use one (``source`` names it everywhere)."""
        record = ModelRecord.default(
            sha256_of(weights),
            GradingRule(),
            threshold=threshold,
            threshold_rule=source,
            predict=predict.model_dump(include=SERVED_PREDICT_SETTINGS),
        )
        return cls(
            checkpoint=str(weights),
            source=source,
            model_version=source,
            threshold=threshold,
            threshold_source=source,
            record=record,
        )


@dataclass
class PhotoBoxes:
    """One photo's detections: ``counted`` at the threshold, ``candidates`` down to the
    calibration's floor (what its grade probabilities come from), both calibrated."""

    key: str
    counted: pd.DataFrame
    candidates: pd.DataFrame


class Predictor:
    """A deployed model ready to predict.

    Args:
        detector: an Ultralytics ``YOLO`` on its runtime.
        record: the model record.
        settings: how to predict (``InferenceSettings``).
        threshold: the calibrated confidence lesions are counted at.
        grade_model: what grades a photo (the record's, checked against the asked rule).
        classifier: the grade classifier (an Ultralytics classification model), when read.
        runtime: the runtime the detector runs on.
    """

    def __init__(
        self,
        detector: Any,
        record: ModelRecord,
        settings: InferenceSettings,
        *,
        threshold: float,
        grade_model: GradeModel,
        classifier: Any = None,
        runtime: str = "torch",
    ) -> None:
        if grade_model.uses_classifier and classifier is None:
            raise ValueError("the grade model reads a grade classifier, and none was given")
        self.detector = detector
        self.record = record
        self.settings = settings
        self.threshold = threshold
        self.grade_model = grade_model
        self.classifier = classifier
        self.runtime = runtime
        self.calibration: Calibration = record.calibrated()

    @classmethod
    def load(
        cls,
        record: ModelRecord,
        checkpoint: Path,
        predict: PredictParams,
        *,
        asked: GradingRule | None = None,
        threshold: float | None = None,
        device: str = "cpu",
        exported: Path | None = None,
        classifier: Path | str | None = None,
    ) -> Predictor:
        """Load the model a record describes.

        Args:
            record: the model record (its grading rule is checked against ``asked`` first,
                before anything is loaded).
            checkpoint: the weights (``.pt``).
            predict: how to predict: the runtime, slicing, merging, batching.
            asked: the grading rule the caller grades under (``None``: the record's own).
            threshold: the calibrated confidence to count at (``None``: the record's).
            device: where to run (``cpu``, ``0``...).
            exported: the weights already exported for ``predict.runtime`` (the served model's
                registered export); ``None``: export here, once (``core.runtimes``).
            classifier: the grade classifier's checkpoint, when the grade model reads one.

        Raises:
            GradeRuleMismatch: the record was made under another grading rule than ``asked``.
        """
        grade_model = record.grader(asked)
        imgsz = predict.imgsz or record.imgsz
        if exported is not None:
            from ultralytics import YOLO

            detector, runtime = YOLO(str(exported), task="detect"), predict.runtime
            imgsz = imgsz or model_imgsz(YOLO(str(checkpoint)))
        else:
            detector, imgsz, runtime = load_on_runtime(Path(checkpoint), predict.runtime, imgsz)
        threshold = record.threshold if threshold is None else float(threshold)
        settings = InferenceSettings.from_params(
            predict,
            imgsz=imgsz,
            conf=record.calibrated().detector_floor(threshold),
            device=device,
            nms_iou=record.nms_iou,
        )
        loaded = None
        if classifier and grade_model.uses_classifier:
            from ultralytics import YOLO

            loaded = YOLO(str(classifier), task="classify")
        return cls(
            detector,
            record,
            settings,
            threshold=threshold,
            grade_model=grade_model,
            classifier=loaded,
            runtime=runtime,
        )

    def adjusted(
        self, predict: PredictParams, *, threshold: float | None = None, imgsz: int | None = None
    ) -> Predictor:
        """The same loaded detector and classifier under other settings (a served request's
        ``conf``, ``imgsz`` or ``slicing``): nothing is loaded again."""
        threshold = self.threshold if threshold is None else float(threshold)
        settings = InferenceSettings.from_params(
            predict,
            imgsz=imgsz or self.settings.imgsz,
            conf=self.calibration.detector_floor(threshold),
            device=self.settings.device,
            nms_iou=self.record.nms_iou,
        )
        return Predictor(
            self.detector,
            self.record,
            settings,
            threshold=threshold,
            grade_model=self.grade_model,
            classifier=self.classifier,
            runtime=self.runtime,
        )

    @property
    def rule(self) -> GradingRule:
        return self.grade_model.grading_rule

    def boxes(self, photos: Iterable[Photo]) -> Iterator[PhotoBoxes]:
        """Each photo's calibrated detections, one photo at a time, batched underneath
        (``inference.iter_predictions``: sliced when large, background tiles skipped)."""
        for key, found in iter_predictions(self.detector, photos, self.settings):
            counted, candidates = self.calibration.split(
                pd.DataFrame(found, columns=PREDICTION_COLUMNS), self.threshold
            )
            yield PhotoBoxes(key, counted, candidates)

    def scores(self, photos: list[Photo]) -> pd.DataFrame | None:
        """The grade classifier's probabilities of the photos, when the grade model reads them."""
        if not self.grade_model.uses_classifier or not photos:
            return None
        from acne_detection.core.grade_classifier import grade_scores

        return grade_scores(
            self.classifier,
            photos,
            n_grades=len(self.rule.names),
            imgsz=int(self.grade_model.classifier.get("imgsz", 224)),
        )

    def grade(
        self,
        counted: pd.DataFrame,
        candidates: pd.DataFrame,
        photos: list[str],
        sides: dict[str, float] | pd.Series,
        scores: pd.DataFrame | None = None,
    ) -> pd.DataFrame:
        """Each photo's count, grade and grade probabilities (``grade_photos``)."""
        return grade_photos(self.grade_model, counted, candidates, photos, sides, scores)

    def predict(self, photos: list[Photo], sides: dict[str, float]) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Photos in one go (the served model's request): their lesions, and one row per photo
        with its count, grade and probabilities (``grade_photos``)."""
        found = list(self.boxes(photos))
        empty = pd.DataFrame(columns=PREDICTION_COLUMNS)
        counted = pd.concat([empty, *(f.counted for f in found)], ignore_index=True)
        candidates = pd.concat([empty, *(f.candidates for f in found)], ignore_index=True)
        keys = [key for key, _ in photos]
        return counted, self.grade(counted, candidates, keys, sides, self.scores(photos))


def load_on_runtime(checkpoint: Path, runtime: str, imgsz: int | None) -> tuple[Any, int, str]:
    """The detector on ``runtime``. A runtime whose export cannot be made here (INT8 needs the
    training photos, which ``register`` has in ``kedro run``) falls back to its table entry's
    ``fallback``, saying so."""
    try:
        model, size = load_detector(checkpoint, runtime=runtime, imgsz=imgsz)
        return model, size, runtime
    except ValueError as err:
        fallback = runtime_entry(runtime).fallback
        if fallback is None:
            raise
        logger.warning("%s. Predicting on %s instead.", err, fallback)
        model, size = load_detector(checkpoint, runtime=fallback, imgsz=imgsz)
        return model, size, fallback


def grade_photos(
    model: GradeModel,
    counted: pd.DataFrame,
    candidates: pd.DataFrame,
    photos: list[str],
    sides: dict[str, float] | pd.Series,
    scores: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Count, grade and grade probabilities per photo, under ``model``.

    Args:
        model: the grade model.
        counted: the lesions at the threshold (``image`` is the photo's key).
        candidates: the detections down to the calibration's floor.
        photos: the photos' keys, in the order of the rows returned.
        sides: each photo's side, ``sqrt(width * height)`` in pixels as displayed.
        scores: the grade classifier's probabilities (``None``: the model reads none).

    Returns:
        ``photo``, ``lesions`` (the counted classes' total), ``estimated_lesions`` where the model
        grades an estimated count (``GradeModel.estimated_counts``), ``grade`` and ``grade_name``
        (the most probable grade: one answer with its probabilities), ``p.<grade name>`` and
        ``grade_probabilities`` ("moderate 72 %, severe 26 %").
    """
    rule = model.grading_rule
    keys = pd.Series(photos, dtype=object)
    probabilities = model.probabilities(candidates, photos, pd.Series(sides, dtype=float), scores)
    table = pd.DataFrame({"photo": keys, "lesions": np.asarray(rule.count(counted, keys), int)})
    estimated = model.estimated_counts(candidates, photos)  # the count its grade grades, where it estimates one
    if estimated is not None:
        table["estimated_lesions"] = estimated
    table["grade"] = model.grades(probabilities)
    table["grade_name"] = table.grade.map(dict(enumerate(rule.names)))
    for k, name in enumerate(rule.names):
        table[f"p.{name}"] = probabilities[:, k].round(4)
    table["grade_probabilities"] = [describe_grade_probabilities(row, rule.names) for row in probabilities]
    return table
