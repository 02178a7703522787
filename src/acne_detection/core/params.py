"""Typed parameter groups, one per pipeline, so a typo in ``conf/`` fails before any node runs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from acne_detection.core.grading import ACNE04_GRADE_NAMES, ACNE04_THRESHOLDS
from acne_detection.core.inference import DEFAULT_NMS_IOU
from acne_detection.core.runtimes import runtime_entry

# the synthetic default's lesion classes, the one list in code (acne_detection.core.synthetic draws them)
SYNTHETIC_CLASSES: tuple[str, ...] = ("comedone", "papule", "pustule", "nodule")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitParams(_Strict):
    train: float = Field(0.7, gt=0, lt=1)
    val: float = Field(0.2, gt=0, lt=1)
    test: float = Field(0.1, gt=0, lt=1)
    seed: int = 0
    keep_source_split: bool = False

    @model_validator(mode="after")
    def _ratios_sum_to_one(self) -> SplitParams:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split ratios train+val+test must sum to 1, got {total:g}")
        return self


class GradeSourceParams(_Strict):
    """Where each photo's true severity grade comes from (a ``grades.csv`` beside the export,
    read by ``AnnotatedExport``, wins over the file name)."""

    pattern: str | None = r"levle(?P<grade>\d)"  # ACNE04's file names; null: none


class LabelAuditParams(_Strict):
    """When do class labels look like image-level labels rather than lesion types?"""

    single_class_share: float = Field(0.9, gt=0, le=1)  # of photos with >= 2 boxes, holding one class only
    token_coverage: float = Field(0.8, gt=0, le=1)  # of photos whose class a file-name token or folder determines
    min_photos: int = Field(5, ge=1)  # photos with >= 2 boxes needed to judge at all
    min_groups: int = Field(3, ge=1)  # source photos a token must span to count as evidence
    strict: bool = False  # true: image-level labels that the class map does not collapse stop the run


class DataSkinToneParams(_Strict):
    """Skin tone per source photo (``acne_detection.core.skin_tone``)."""

    measure: bool = True  # false: no tone is measured, the split is not stratified by it, eval reports none
    max_side: int = Field(256, ge=32)  # photos are measured at this long side


class DataParams(_Strict):
    classes: tuple[str, ...] = SYNTHETIC_CLASSES  # conf/base/globals.yml names the same four (tested)
    class_map: dict[str, str] = Field(default_factory=dict)
    unmapped_class: Literal["quarantine", "error"] = "quarantine"
    strict: bool = False
    edge_tolerance_px: float = Field(1.0, ge=0)
    group_pattern: str = r"^(?P<group>.+?)_(?:jpe?g|png|bmp|webp)\.rf\.[0-9a-fA-F]+$"
    split: SplitParams = SplitParams()
    grades: GradeSourceParams = GradeSourceParams()
    label_audit: LabelAuditParams = LabelAuditParams()
    skin_tone: DataSkinToneParams = DataSkinToneParams()

    @model_validator(mode="after")
    def _map_targets_are_classes(self) -> DataParams:
        unknown = sorted(set(self.class_map.values()) - set(self.classes))
        if unknown:
            raise ValueError(f"class_map maps to {unknown}, which are not in classes {list(self.classes)}")
        return self


class AugmentParams(_Strict):
    """Ultralytics' augmentation hyperparameters (names as in its ``default.yaml``)."""

    hsv_h: float = Field(0.015, ge=0, le=1)
    hsv_s: float = Field(0.7, ge=0, le=1)
    hsv_v: float = Field(0.4, ge=0, le=1)
    degrees: float = Field(10.0, ge=0, le=180)
    translate: float = Field(0.1, ge=0, le=1)
    scale: float = Field(0.5, ge=0)
    shear: float = Field(0.0, ge=0)
    perspective: float = Field(0.0, ge=0, le=0.001)
    flipud: float = Field(0.0, ge=0, le=1)
    fliplr: float = Field(0.5, ge=0, le=1)
    mosaic: float = Field(1.0, ge=0, le=1)
    mixup: float = Field(0.1, ge=0, le=1)
    close_mosaic: int = Field(8, ge=0)


class TrainParams(_Strict):
    pretrained: bool = True
    # yolov8n-p2: an extra stride-4 head for lesions of a few pixels; yolov8n.pt's weights are transferred
    # where the shapes match (the backbone), so the neck and head start untrained (a sweep candidate).
    # yolov8s: 3.3x yolov8n's compute, from YOLO-World v2's small checkpoint (catalog: pretrained_weights'
    # architectures), its backbone and neck transferred where names and shapes match (a sweep candidate)
    architecture: Literal["yolov8n", "yolov8n-p2", "yolov8s"] = "yolov8n"
    resume: Literal["auto", False] = "auto"
    device: str = "auto"
    epochs: int = Field(20, ge=1)
    imgsz: int = Field(416, ge=32)
    batch: int | Literal["auto"] = "auto"
    freeze: int = Field(10, ge=0)
    optimizer: Literal["SGD", "AdamW", "Adam", "auto"] = "SGD"
    lr0: float = Field(0.01, gt=0)
    nbs: int = Field(16, ge=1)
    warmup_epochs: float = Field(3.0, ge=0)
    patience: int = Field(100, ge=0)
    seed: int = 0
    workers: int | Literal["auto"] = "auto"
    cache: Literal[False, "ram", "disk"] = False
    augment: AugmentParams = AugmentParams()


class PreviewParams(_Strict):
    samples: int = Field(16, ge=1)
    columns: int = Field(4, ge=1)
    seed: int = 0
    loss_samples: int = Field(64, ge=1)


class OperatingPointParams(_Strict):
    rule: Literal["max_f1", "recall_target"] = "max_f1"
    recall_target: float = Field(0.85, gt=0, le=1)


class GateParams(_Strict):
    map50: float = Field(0.80, ge=0, le=1)
    recall: float = Field(0.85, ge=0, le=1)
    precision: float = Field(0.75, ge=0, le=1)
    grade_accuracy: float | None = Field(None, ge=0, le=1)  # null: grading is reported, not gated
    skin_tone: bool = False  # true: a tone band flagged for its recall gap fails the gate
    strict: bool = False


class SkinToneEvalParams(_Strict):
    """Metrics per skin tone band, and when a band's recall gap is flagged."""

    min_photos: int = Field(15, ge=1)  # bands with fewer test photos are reported, not judged
    recall_margin: float = Field(0.05, ge=0, le=1)  # flag a band whose recall is this far below the overall
    bootstrap: int = Field(1000, ge=0)  # resamples of the band's photos for the 95 % intervals; 0: none
    seed: int = 0


class CalibrationParams(_Strict):
    method: Literal["platt", "none"] = "platt"  # platt: logistic scaling fitted on the validation split
    min_conf: float = Field(0.05, gt=0, lt=1)  # detections fitted, measured and turned into grade probabilities
    bins: int = Field(10, ge=2)  # equal-width confidence bins of D-ECE and the reliability diagram


class EvalParams(_Strict):
    model: str | None = None
    device: str = "auto"
    operating_point: OperatingPointParams = OperatingPointParams()
    calibration: CalibrationParams = CalibrationParams()
    gate: GateParams = GateParams()
    skin_tone: SkinToneEvalParams = SkinToneEvalParams()
    gallery_size: int = Field(4, ge=1)
    iou_threshold: float = Field(0.5, gt=0, lt=1)
    min_conf: float = Field(0.001, gt=0, lt=1)
    # NMS suppresses a box overlapping a higher one of its class by more than this IoU; eval also tries each of
    # nms_candidates on the validation photos and keeps one only where it beats nms_iou's mAP@50
    # there (the sweep measures at nms_iou)
    nms_iou: float = Field(DEFAULT_NMS_IOU, gt=0, lt=1)
    nms_candidates: tuple[float, ...] = ()
    max_det: int = Field(300, ge=1)
    # predict the training split too, so the grade model may be fitted there (chosen on validation)
    grade_model_on_train: bool = True

    @field_validator("nms_candidates")
    @classmethod
    def _overlaps(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 < v < 1 for v in value):
            raise ValueError(f"nms_candidates {list(value)}: each an IoU between 0 and 1")
        return value

    @property
    def nms_tried(self) -> tuple[float, ...]:
        """The NMS IoUs eval measures on validation: ``nms_iou`` first (it keeps ties), then the
        other candidates, each once."""
        return tuple(dict.fromkeys((self.nms_iou, *self.nms_candidates)))


class PredictParams(_Strict):
    model: str | None = None  # as eval.model: null (the model train saved), a .pt, runs:/..., models:/...
    threshold: float | None = Field(None, gt=0, lt=1)  # null: the operating point eval chose for this model
    default_threshold: float = Field(0.25, gt=0, lt=1)  # used, with a warning, when eval chose none for it
    device: str = "auto"
    # a key of core.runtimes.RUNTIMES: torch; onnx (ONNX Runtime); openvino (OpenVINO fp32);
    # openvino-int8 (OpenVINO INT8, calibrated on the training photos; exported once per weights)
    runtime: str = "openvino-int8"
    imgsz: int | None = Field(None, ge=32)  # null: the model's training size
    slicing: Literal["auto", "always", "never"] = "auto"
    slice_above: float = Field(2.0, gt=0)  # auto slices photos whose long side exceeds this many times imgsz
    overlap: float = Field(0.2, ge=0, lt=1)
    tile: int | None = Field(None, ge=32)  # null: the model's own imgsz
    merge_metric: Literal["IOS", "IOU"] = "IOS"
    merge_threshold: float = Field(0.5, gt=0, le=1)
    skip_background: bool = True  # sliced photos: tiles with no skin in or near them are not predicted
    # a tile is predicted when this share of it is skin (the mask dilated by the overlap)
    min_skin: float = Field(0.02, gt=0, le=1)
    batch: int = Field(8, ge=1)
    nms_iou: float | None = Field(None, gt=0, lt=1)  # null: the NMS IoU eval chose for this model
    max_det: int = Field(1000, ge=1)
    annotated_max_side: int = Field(1600, ge=64)
    report_thumb_side: int = Field(360, ge=64)

    @field_validator("runtime")
    @classmethod
    def _known_runtime(cls, value: str) -> str:
        runtime_entry(value)  # one table of runtimes: a new one is an entry there, not a new literal here
        return value


# What the registered model carries of ``predict`` (``register``'s config): the served model
# slices, merges and suppresses as the predict pipeline does.
SERVED_PREDICT_SETTINGS = frozenset(
    {
        "runtime",
        "slicing",
        "slice_above",
        "overlap",
        "tile",
        "merge_metric",
        "merge_threshold",
        "skip_background",
        "min_skin",
        "batch",
        "nms_iou",
        "max_det",
    }
)


class GradingParams(_Strict):
    """The count→grade rule (``acne_detection.core.grading.severity_grade``)."""

    thresholds: tuple[int, ...] = ACNE04_THRESHOLDS  # 0-5 mild, 6-20 moderate, 21-50 severe, > 50 very severe
    names: tuple[str, ...] = ACNE04_GRADE_NAMES
    count_classes: tuple[str, ...] | None = None  # null: every lesion; Hayashi counts [papule, pustule]
    # fit, on the validation split, a scale from the detector's count to the true count; use it (as
    # thresholds on the detector's count) only if it grades the validation photos better than the rule
    correct_counts: bool = True
    # auto: a logistic grade model on the detector's evidence where it grades validation photos
    # better than the rule (acne_detection.core.grade_model); rule: the count rule alone
    model: Literal["auto", "rule"] = "auto"
    seed: int = 0  # the grade model's cross-validation folds

    @model_validator(mode="after")
    def _one_name_per_grade(self) -> GradingParams:
        if list(self.thresholds) != sorted(set(self.thresholds)):
            raise ValueError(f"grading.thresholds must increase strictly, got {list(self.thresholds)}")
        if len(self.names) != len(self.thresholds) + 1:
            raise ValueError(
                f"grading.names needs {len(self.thresholds) + 1} names for {len(self.thresholds)} thresholds"
            )
        return self


class GradeClassifierParams(_Strict):
    """The whole-photo grade classifier (``core.grade_classifier``): the grade model's second signal."""

    enabled: bool = True
    imgsz: int = Field(224, ge=32)
    epochs: int = Field(15, ge=1)
    batch: int = Field(16, ge=1)
    min_photos: int = Field(30, ge=2)  # graded training photos (of at least two grades) needed to train it
    seed: int = 0
    device: str = "auto"
    workers: int = Field(2, ge=0)


class TrackingParams(_Strict):
    """What goes to the MLflow tracking store besides metrics and tables."""

    log_photos: bool = (
        True  # false: figures made of photos (previews, error gallery, predict report) stay on this machine
    )
    # true: tables and texts logged to the tracking store name photos by a keyed hash (acne_detection.core.pseudonyms)
    pseudonymize: bool = False


class SweepConfigParams(_Strict):
    """One training recipe of the sweep: ``train`` overrides and the share of training photos."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    train: dict[str, Any] = {}  # keys of `train` (nested `augment` too) that differ from conf's `train`
    train_fraction: float = Field(1.0, gt=0, le=1)  # share of training source photos (learning curve)


class SweepResourcesParams(_Strict):
    """What one sweep recipe (a Ray Tune trial) holds while it trains: Ray starts as many at once
    as the cluster (or this machine's local instance) has room for."""

    cpus: float = Field(1, gt=0)  # Ray also sets the trial's torch threads (OMP_NUM_THREADS) to this
    gpus: float | None = Field(None, ge=0)  # null: 1 when the cluster has a GPU, else 0; 0.5: two trials share one


class SweepParams(_Strict):
    """``kedro run --pipeline sweep``: recipes trained on one split, chosen on validation only."""

    budget_minutes: float = Field(90, gt=0)  # estimated training minutes of all recipes; one over it is skipped
    select: Literal["val_mAP50", "val_grade_accuracy"] = "val_mAP50"
    checkpoint_every: int = Field(5, ge=0)  # epochs between checkpoints graded on validation; 0: best only
    seconds_per_photo: float = Field(0.15, gt=0)  # first guess of one photo-epoch at 416 px, until one is measured
    full_export_train_photos: int = Field(1870, ge=1)  # where the learning curve is extrapolated to
    workdir: str = "data/06_models/sweep"
    use_ray: bool = True  # false: recipes one after another in the run's process, even with the `ray` extra
    resources: SweepResourcesParams = SweepResourcesParams()  # per recipe, when Ray runs them
    configs: tuple[SweepConfigParams, ...] = ()

    @model_validator(mode="after")
    def _names_unique(self) -> SweepParams:
        names = [c.name for c in self.configs]
        if len(names) != len(set(names)):
            raise ValueError(f"sweep.configs: names must be unique, got {names}")
        return self


class ReviewParams(_Strict):
    """The review loop (``kedro run --pipeline review``; README, "Review loop")."""

    # Label Studio's LOCAL_FILES_DOCUMENT_ROOT (make labelstudio's --document-root): the photo
    # folder must be inside it, and tasks address photos relative to it
    document_root: str = "data/01_raw"


class BatchPredictParams(_Strict):
    """How ``predict`` spreads a folder over Ray's actors (``model.batch``), or keeps it in one process."""

    engine: Literal["auto", "ray", "local"] = "auto"  # auto: Ray from min_photos photos on; ray, local: always
    min_photos: int = Field(3200, ge=1)  # auto: below this many photos to predict, one process (measured)
    actors: int | None = Field(None, ge=1)  # null: as many as the cluster's CPUs hold, cpus_per_actor each
    cpus_per_actor: float = Field(1, gt=0)
    gpus_per_actor: float = Field(0, ge=0)
    batch_photos: int = Field(16, ge=1)  # photos per batch: what a lost worker costs, and one part file
    attempts: int = Field(3, ge=1)  # a lost worker stops an attempt; the next predicts what is not finished
    parts: str | None = "data/07_model_output/predictions/parts"  # finished batches, to resume; null: none kept


class DistributedParams(_Strict):
    """Where Ray runs (``framework.distributed``): a cluster, or a local instance on 127.0.0.1."""

    address: str | None = None  # a cluster's host:port; null: RAY_ADDRESS, else a local instance
    predict: BatchPredictParams = BatchPredictParams()


PARAMETER_GROUPS: dict[str, type[_Strict]] = {
    "data": DataParams,
    "train": TrainParams,
    "preview": PreviewParams,
    "eval": EvalParams,
    "grading": GradingParams,
    "grade_classifier": GradeClassifierParams,
    "predict": PredictParams,
    "tracking": TrackingParams,
    "sweep": SweepParams,
    "review": ReviewParams,
    "distributed": DistributedParams,
}


def parse(group: str, raw: dict[str, Any]) -> Any:
    """Validate one parameter group, naming the offending ``conf/`` key on error.

    Args:
        group: the top-level key in ``parameters_<group>.yml``.
        raw: its content as Kedro loaded it, or the typed object itself (returned as is).

    Returns:
        The frozen, typed parameters.

    Raises:
        ValueError: a key is unknown, missing or of the wrong type.
    """
    if isinstance(raw, PARAMETER_GROUPS[group]):  # already typed (Kedro validated it for a node)
        return raw
    try:
        return PARAMETER_GROUPS[group].model_validate(raw)
    except Exception as err:  # pydantic's message names the key; add where it lives
        raise ValueError(f"Invalid parameters '{group}' (conf/*/parameters_{group}.yml): {err}") from err
