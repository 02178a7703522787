"""The model record: everything that makes a deployed model what it is, in one typed object.

Eval makes it for the weights it evaluated (the operating threshold, the calibration, the grade
model with the grading rule it was made under); register completes it (how predict slices and
merges, the runtime, the training run, the dataset's digest) and logs it as the served model's
configuration and as the registered version's ``model_record`` tag; predict and the served
model read it back. It is serialised here only (``to_json``/``from_json``, ``to_tags``/
``from_tags``, ``to_config``/``from_config``), so the three places hold the same thing.

A record made under one grading rule is never applied under another: ``grader`` refuses,
naming both rules (``GradeRuleMismatch``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from acne_detection.core.calibration import Calibration
from acne_detection.core.grade_model import GradeModel
from acne_detection.core.grading import GradingRule
from acne_detection.core.inference import DEFAULT_NMS_IOU, DEFAULT_THRESHOLD

NO_OPERATING_POINT = "default (no operating point chosen)"
# the registry tag holding the whole record; the others are there for people browsing the registry
RECORD_TAG = "model_record"


class ModelRecord(BaseModel):
    """A deployed model's record.

    Attributes:
        model_sha256: the weights' SHA-256 (what every other field belongs to).
        model_source: where the weights were taken from (``trained_weights``, ``runs:/``, ``models:/``, a path).
        classes: the detector's class names, by class id.
        imgsz: the size it was trained at (``None``: unknown, the checkpoint says).
        threshold: the operating point, a calibrated confidence.
        threshold_rule: how it was chosen (e.g. "max F1 on validation").
        calibration: ``Calibration.to_dict()``, the map the threshold is on.
        nms_iou: the IoU at which the detector's non-maximum suppression drops the lower of two
            boxes (eval's choice on validation; Ultralytics' 0.7 for a record eval did not make).
        nms_rule: how it was chosen, in words (the validation mAP@50 at each IoU tried).
        grade_model: ``GradeModel.to_dict()``: what grades a photo, with the grading rule (and
            eval's count correction) it was made under. The count rule when eval chose no model.
        predict: how predict slices, merges and suppresses (``SERVED_PREDICT_SETTINGS``), with
            the runtime; ``{}``: predict's defaults.
        run_id: the MLflow run that registered the weights.
        dataset_manifest_sha256: the digest of the split manifest the model was trained on.
        trained_on: ``synthetic`` or ``real`` (the split manifest's sources).
        training_health: the training-health verdict.
        warning: what every answer of the served model says (e.g. trained on synthetic photos).
    """

    model_config = ConfigDict(extra="ignore", frozen=True, protected_namespaces=(), validate_default=True)

    model_sha256: str
    model_source: str = ""
    classes: tuple[str, ...] = ()
    imgsz: int | None = None
    threshold: float = DEFAULT_THRESHOLD
    threshold_rule: str = NO_OPERATING_POINT
    calibration: dict[str, Any] = {}
    nms_iou: float = DEFAULT_NMS_IOU
    nms_rule: str = "Ultralytics' default"
    grade_model: dict[str, Any]
    predict: dict[str, Any] = {}
    run_id: str = ""
    dataset_manifest_sha256: str = ""
    trained_on: str = ""
    training_health: str = ""
    warning: str = ""

    @field_validator("calibration")
    @classmethod
    def _calibration(cls, value: dict[str, Any]) -> dict[str, Any]:
        return Calibration.from_dict(value).to_dict()

    @field_validator("grade_model")
    @classmethod
    def _grade_model(cls, value: dict[str, Any]) -> dict[str, Any]:
        model = GradeModel.from_dict(value)
        if model is None:
            raise ValueError("a model record needs its grade model (the count rule at least)")
        return model.to_dict()

    @classmethod
    def default(cls, model_sha256: str, rule: GradingRule, **fields: Any) -> ModelRecord:
        """The record of weights no eval has seen: Ultralytics' default confidence, no
        calibration, the count rule."""
        return cls(model_sha256=model_sha256, grade_model=GradeModel.rule(rule).to_dict(), **fields)

    @property
    def has_operating_point(self) -> bool:
        return self.threshold_rule != NO_OPERATING_POINT

    def warnings(self) -> list[str]:
        """What every answer must say: synthetic training photos, no calibration."""
        return [w for w in (self.warning, self.calibrated().warning) if w]

    def calibrated(self) -> Calibration:
        """The calibration the threshold and the grade probabilities are on."""
        return Calibration.from_dict(self.calibration)

    def stored_grade_model(self) -> GradeModel:
        model = GradeModel.from_dict(self.grade_model)
        assert model is not None  # the validator made sure
        return model

    def grading_rule(self) -> GradingRule:
        """The grading rule the record was made under, with eval's count correction."""
        return self.stored_grade_model().grading_rule

    def grader(self, asked: GradingRule | None = None) -> GradeModel:
        """What grades this model's photos, checked against the rule ``asked`` for.

        Raises:
            GradeRuleMismatch: the record was made under another rule, naming both.
        """
        model = self.stored_grade_model()
        if asked is not None:
            model.check_rule(asked)
        return model

    def same_model(self, other: ModelRecord | None) -> bool:
        """Whether ``other`` describes the same deployed model: everything equal but where the
        weights were taken from and the run that registered them."""
        volatile = {"model_source", "run_id"}
        return other is not None and self.model_dump(exclude=volatile) == other.model_dump(exclude=volatile)

    # --- where it is stored ----------------------------------------------------------------

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str) -> ModelRecord:
        return cls.model_validate_json(text)

    def to_config(self) -> dict[str, Any]:
        """The served model's configuration (``mlflow.pyfunc.log_model``'s ``model_config``)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ModelRecord:
        return cls.model_validate(config)

    def to_tags(self) -> dict[str, str]:
        """A registered version's tags: the whole record, and the fields people filter on."""
        tags = {
            RECORD_TAG: self.model_dump_json(),
            "model_sha256": self.model_sha256,
            "trained_on": self.trained_on,
            "training_health": self.training_health,
            "dataset_manifest_sha256": self.dataset_manifest_sha256,
        }
        if self.has_operating_point:
            tags.update(operating_threshold=str(self.threshold), operating_rule=self.threshold_rule)
        return {k: v for k, v in tags.items() if v}

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> ModelRecord | None:
        """The record a registered version carries; ``None`` when it carries none (registered
        before versions carried their record: run eval or register again)."""
        text = tags.get(RECORD_TAG)
        return cls.from_json(text) if text else None
