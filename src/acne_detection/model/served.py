"""The trained detector as an MLflow pyfunc model: load it anywhere MLflow runs (or serve it
with ``mlflow models serve``) and send it photos, as paths or as the file's bytes in base64;
get back each photo's lesions, count and severity grade.

MLflow logs ``pyfunc_model.py`` (the "models from code" file, which only names this class) and
the ``acne_detection`` package beside it (``code_paths``), so loading needs no pickled object
and no install of this project, only its dependencies (Ultralytics, torch, pandas, Pillow, SAHI
for sliced inference). Its answers come from ``acne_detection.model.predictor.Predictor``, the
predictor the ``predict`` pipeline uses.
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
    "estimated_lesions": "long",  # the count the grade grades, where the grade model estimates one; null otherwise
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
OPTIONAL_OUTPUTS = frozenset({"estimated_lesions"})  # absent from an answer by a model that does not estimate


class YoloDetector(mlflow.pyfunc.PythonModel):
    """Wraps an Ultralytics checkpoint (the ``weights`` artifact) and its model record (the
    model's configuration, ``ModelRecord.to_config``) in the project's ``Predictor``, the one
    the predict pipeline uses.

    ``predict`` takes a DataFrame with an ``image`` column (file paths on the server) and/or an
    ``image_b64`` column (the photo file's bytes, base64) and returns one row per photo:
    ``image`` (the path, or ``#<row>`` for bytes), ``lesions``, ``estimated_lesions`` (the count
    the grade grades, where the grade model estimates one, else null), ``grade``, ``grade_name`` and
    ``boxes`` (JSON: class, confidence, x_min, y_min, x_max, y_max in the photo's pixels),
    ``grade_probabilities`` (JSON: each grade's probability under the record's grade model, from
    the photo's calibrated detections; ``grade`` is the most probable), ``threshold`` (the
    calibrated confidence applied), ``model_sha256`` and ``run_id`` (the weights and the run that
    registered them) and ``warning`` (a model trained on synthetic photos says so).
    A request that holds no usable photo is answered 400 with the reason in words (``photos_of``).
    ``params``: ``conf`` (default: the record's operating point, also the signature's default),
    ``imgsz`` (0: the training size) and ``slicing`` (``auto``, ``always``, ``never``). Tiles,
    overlap, merging, batch and the runtime are the record's ``predict`` settings (the
    ``runtime_model`` artifact: the weights exported for that runtime at registration).
    """

    def load_context(self, context: Any) -> None:
        import acne_detection  # noqa: F401 - its import sets the privacy defaults, before Ultralytics reads them
        from acne_detection.core.params import PredictParams
        from acne_detection.model.predictor import Predictor
        from acne_detection.model.record import ModelRecord

        self.record = ModelRecord.from_config(dict(context.model_config or {}))
        exported = context.artifacts.get("runtime_model")
        self.predictor = Predictor.load(
            self.record,
            context.artifacts["weights"],
            PredictParams.model_validate(
                self.record.predict if exported else {**self.record.predict, "runtime": "torch"}
            ),
            exported=exported,
            classifier=context.artifacts.get("grade_classifier"),
        )

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        from pydantic import ValidationError

        from acne_detection.core.params import PredictParams

        params = params or {}
        # how predict slices and merges, as the record says; a request may choose the slicing
        asked = {**self.record.predict, **({"slicing": str(params["slicing"])} if params.get("slicing") else {})}
        try:
            predict = PredictParams.model_validate(asked)
        except ValidationError as err:
            first = err.errors()[0]
            raise _bad_request(f"params: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
        conf = params.get("conf")
        predictor = self.predictor.adjusted(
            predict, threshold=None if conf is None else float(conf), imgsz=int(params.get("imgsz") or 0) or None
        )
        photos = photos_of(model_input)
        try:
            boxes, graded = predictor.predict(photos, photo_sides(photos))
        except (ValueError, OSError) as err:  # a photo that passed its check and still failed to decode
            raise _bad_request(f"a photo cannot be decoded: {err}") from None
        warning = "; ".join(self.record.warnings())
        rows = []
        for row in graded.to_dict("records"):
            listed = boxes.loc[boxes.image == row["photo"], ["class", "confidence", "x_min", "y_min", "x_max", "y_max"]]
            rows.append(
                (
                    row["photo"],
                    int(row["lesions"]),
                    None if pd.isna(row.get("estimated_lesions", None)) else int(row["estimated_lesions"]),
                    int(row["grade"]),
                    row["grade_name"],
                    json.dumps(listed.round(2).to_dict("records")),
                    json.dumps({name: float(row[f"p.{name}"]) for name in predictor.rule.names}),
                    predictor.threshold,
                    self.record.model_sha256,
                    self.record.run_id,
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
