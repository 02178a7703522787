"""The trained detector as an MLflow pyfunc model: load it anywhere MLflow runs (or serve it
with ``mlflow models serve``) and send it photos, as paths or as the file's bytes in base64;
get back each photo's lesions, count and severity grade.

MLflow logs ``pyfunc_model.py`` (the "models from code" file, which only names this class) and
the ``acne_detection`` package beside it (``code_paths``), so loading needs no pickled object
and no install of this project, only its dependencies (Ultralytics, torch, pandas, Pillow, SAHI
for sliced inference). The boxes come from ``acne_detection.core.inference.predict_boxes``, the
function ``eval`` and ``predict`` use.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import mlflow.pyfunc
import pandas as pd

# Each answer row names the photo, its lesions and grade, and what produced them: the threshold
# applied, the weights' SHA-256 and the MLflow run that trained and registered them.
OUTPUT_TYPES = {
    "image": "string",
    "lesions": "long",
    "grade": "long",
    "grade_name": "string",
    "boxes": "string",
    "grade_probabilities": "string",  # JSON {grade name: probability}, from the calibrated detections
    "threshold": "double",
    "model_sha256": "string",
    "run_id": "string",
    "warning": "string",  # e.g. a model trained on synthetic photos says so in every answer
}
OUTPUT_COLUMNS = list(OUTPUT_TYPES)


class YoloDetector(mlflow.pyfunc.PythonModel):
    """Wraps an Ultralytics checkpoint (the ``weights`` artifact).

    ``predict`` takes a DataFrame with an ``image`` column (file paths on the server) and/or an
    ``image_b64`` column (the photo file's bytes, base64) and returns one row per photo:
    ``image`` (the path, or ``#<row>`` for bytes), ``lesions``, ``grade``, ``grade_name`` and
    ``boxes`` (JSON: class, confidence, x_min, y_min, x_max, y_max in the photo's pixels),
    ``grade_probabilities`` (JSON: each grade's probability under the grade model registered
    with the weights, from the photo's calibrated detections; ``grade`` is the most probable),
    ``threshold`` (the calibrated
    confidence applied), ``model_sha256`` and ``run_id`` (the weights and
    the run that produced them) and ``warning`` (a model trained on synthetic photos says so).
    A request that holds no usable photo is answered 400 with the reason in words (``photos_of``).
    ``params``: ``conf`` (default: the operating point eval chose for these weights, carried in
    the model's configuration and its signature), ``imgsz`` (0: the training size) and
    ``slicing`` (``auto``, ``always``, ``never``). Tiles, overlap, merging and batch are the
    ``predict`` settings registered with the model (``config["predict"]``), through the same
    ``InferenceSettings.from_params`` the predict pipeline uses; the runtime too (the
    ``runtime_model`` artifact: the weights exported for ``predict.runtime`` at registration).
    """

    def load_context(self, context: Any) -> None:
        from ultralytics import YOLO

        import acne_detection  # noqa: F401 - its import sets the privacy defaults, before Ultralytics reads them
        from acne_detection.core.inference import model_imgsz

        self.config = dict(context.model_config or {})
        weights = YOLO(context.artifacts["weights"])
        self.imgsz = model_imgsz(weights)  # the training size, which an export does not carry
        # the runtime predict was registered with (predict.runtime), exported at registration
        exported = context.artifacts.get("runtime_model")
        self.model = YOLO(exported, task="detect") if exported else weights
        # the whole-photo grade classifier, where the registered grade model reads it
        classifier = context.artifacts.get("grade_classifier")
        self.classifier = YOLO(classifier, task="classify") if classifier else None

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        from pydantic import ValidationError

        from acne_detection.core.calibration import Calibration
        from acne_detection.core.grade_model import GradeModel
        from acne_detection.core.grading import GradingRule
        from acne_detection.core.inference import DEFAULT_THRESHOLD, InferenceSettings, predict_boxes
        from acne_detection.core.params import PredictParams

        params = params or {}
        conf = params.get("conf")
        threshold = float(conf if conf is not None else self.config.get("threshold", DEFAULT_THRESHOLD))
        calibration = Calibration.from_dict(self.config.get("calibration"))
        # how predict slices and merges, as registered with the model (a version registered before
        # the model carried it: predict's defaults); a request may choose the slicing
        registered = dict(self.config.get("predict") or {})
        if params.get("slicing"):
            registered["slicing"] = str(params["slicing"])
        try:
            predict = PredictParams.model_validate(registered)
        except ValidationError as err:
            first = err.errors()[0]
            raise _bad_request(f"params: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
        settings = InferenceSettings.from_params(
            predict,
            imgsz=int(params.get("imgsz") or self.imgsz),
            conf=calibration.detector_floor(threshold),
            device="cpu",
        )
        photos = photos_of(model_input)
        try:
            boxes, candidates = calibration.split(predict_boxes(self.model, photos, settings), threshold)
        except (ValueError, OSError) as err:  # a photo that passed its check and still failed to decode
            raise _bad_request(f"a photo cannot be decoded: {err}") from None
        # what grades a photo, registered with the model: eval's grade model, else the rule and its correction
        model = GradeModel.from_dict(self.config.get("grade_model"))
        model = model or GradeModel.rule(GradingRule.from_config(self.config))
        rule = model.grading_rule
        keys = pd.Series([key for key, _ in photos])
        counts = rule.count(boxes, keys)
        scores = None
        if model.uses_classifier:
            from acne_detection.core.grade_classifier import grade_scores

            if self.classifier is None:
                raise RuntimeError(
                    "the registered grade model reads a grade classifier that was not registered with it"
                )
            scores = grade_scores(
                self.classifier, photos, n_grades=len(rule.names), imgsz=int(model.classifier.get("imgsz", 224))
            )
        probabilities = model.probabilities(candidates, keys, photo_sides(photos), scores)
        grades = model.grades(probabilities)  # the most probable grade: one answer with its probabilities
        warning = "; ".join(w for w in (str(self.config.get("warning", "")), calibration.warning) if w)
        rows = []
        for key, n, grade, grade_p in zip(keys, counts, grades, probabilities, strict=True):
            listed = boxes.loc[boxes.image == key, ["class", "confidence", "x_min", "y_min", "x_max", "y_max"]]
            rows.append(
                (
                    key,
                    int(n),
                    int(grade),
                    rule.names[grade],
                    json.dumps(listed.round(2).to_dict("records")),
                    json.dumps({name: round(float(p), 4) for name, p in zip(rule.names, grade_p, strict=True)}),
                    threshold,
                    str(self.config.get("model_sha256", "")),
                    str(self.config.get("run_id", "")),
                    warning,
                )
            )
        return pd.DataFrame(rows, columns=OUTPUT_COLUMNS)


def photo_sides(photos: list[tuple[str, str | bytes]]) -> dict[str, float]:
    """Each photo's side, ``sqrt(width * height)`` in pixels as displayed (the grade model reads
    box sizes relative to it), from its header alone: ``photos_of`` already checked the photos."""
    from acne_detection.core.image_check import open_photo
    from acne_detection.core.inference import displayed_size

    sides = {}
    for key, source in photos:
        with open_photo(source) as img:
            width, height = displayed_size(img)
        sides[key] = float(width * height) ** 0.5
    return sides


def _bad_request(message: str) -> Exception:
    """A 400 answer that says what was wrong in words (MLflow sends no traceback with it)."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def photos_of(model_input: pd.DataFrame) -> list[tuple[str, str | bytes]]:
    """The request's photos as ``(key, path or bytes)``, each checked before any model code runs.

    Every row must carry a photo: ``image_b64`` (the file's bytes, base64) or ``image`` (a
    path on the server). A photo that is not base64, empty, not an image, truncated, or
    declares more pixels than ``image_check.PIXEL_LIMIT`` (checked from its header, before
    any pixel is decoded) refuses the whole request with a 400 naming the row and the problem.

    Raises:
        MlflowException: ``INVALID_PARAMETER_VALUE`` (HTTP 400), in words.
    """
    import binascii

    from acne_detection.core.image_check import probe_bytes

    if model_input.empty:
        raise _bad_request("the request holds no photo")
    photos: list[tuple[str, str | bytes]] = []
    for i, row in enumerate(model_input.to_dict("records")):
        encoded, path = row.get("image_b64"), row.get("image")
        if isinstance(encoded, str):
            try:
                data = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise _bad_request(
                    f"row {i}: image_b64 is not base64 (send the photo file's bytes, base64-encoded)"
                ) from None
            probe = probe_bytes(data)
            if probe["image_problem"]:
                raise _bad_request(f"row {i}: {probe['image_problem']}: {probe['image_detail']}")
            photos.append((f"#{i}", data))
        elif isinstance(path, str) and path:
            photos.append((path, path))
        else:  # MLflow drops columns the signature does not name, so a misspelt one arrives as nothing
            raise _bad_request(
                f"row {i} holds no photo: send it in a column named image_b64 (the file's bytes in base64) "
                "or image (a path on the server); columns of other names are ignored"
            )
    return photos
