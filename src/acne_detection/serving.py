"""The trained detector as an MLflow pyfunc model: load it anywhere MLflow runs (or serve it
with ``mlflow models serve``) and send it photos, as paths or as the file's bytes in base64;
get back each photo's lesions, count and severity grade.

MLflow logs this file itself ("models from code") and the ``acne_detection`` package beside
it (``code_paths``), so loading needs no pickled object and no install of this project, only
its dependencies (Ultralytics, torch, pandas, Pillow, SAHI for sliced inference). The boxes
come from ``acne_detection.inference.predict_boxes``, the function ``eval`` and ``predict`` use.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import mlflow.models
import mlflow.pyfunc
import pandas as pd

OUTPUT_COLUMNS = ["image", "lesions", "grade", "grade_name", "boxes"]


class YoloDetector(mlflow.pyfunc.PythonModel):
    """Wraps an Ultralytics checkpoint (the ``weights`` artifact).

    ``predict`` takes a DataFrame with an ``image`` column (file paths on the server) and/or an
    ``image_b64`` column (the photo file's bytes, base64) and returns one row per photo:
    ``image`` (the path, or ``#<row>`` for bytes), ``lesions``, ``grade``, ``grade_name`` and
    ``boxes`` (JSON: class, confidence, x_min, y_min, x_max, y_max in the photo's pixels).
    ``params``: ``conf`` (default 0.25; pass the operating threshold ``eval`` chose, the
    registered version's ``operating_threshold`` tag), ``imgsz`` (0: the training size) and
    ``slicing`` (``auto``, ``always``, ``never``).
    """

    def load_context(self, context: Any) -> None:
        from ultralytics import YOLO

        import acne_detection  # noqa: F401 - its import sets the privacy defaults, before Ultralytics reads them

        self.model = YOLO(context.artifacts["weights"])
        self.grading = dict(context.model_config or {})

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        from acne_detection.grading import ACNE04_GRADE_NAMES, ACNE04_THRESHOLDS, count_lesions, severity_grade
        from acne_detection.inference import InferenceSettings, model_imgsz, predict_boxes

        params = params or {}
        settings = InferenceSettings(
            imgsz=int(params.get("imgsz") or model_imgsz(self.model)),
            conf=float(params.get("conf", 0.25)),
            slicing=str(params.get("slicing", "auto")),
            device="cpu",
            batch=1,
        )
        photos = []
        for i, row in enumerate(model_input.to_dict("records")):
            encoded = row.get("image_b64")
            if isinstance(encoded, str) and encoded:
                photos.append((f"#{i}", base64.b64decode(encoded)))
            else:
                photos.append((str(row["image"]), str(row["image"])))
        boxes = predict_boxes(self.model, photos, settings)
        counted = self.grading.get("count_classes")
        thresholds = self.grading.get("thresholds", ACNE04_THRESHOLDS)
        names = self.grading.get("names", ACNE04_GRADE_NAMES)
        keys = pd.Series([key for key, _ in photos])
        counts = count_lesions(boxes, keys, tuple(counted) if counted else None)
        rows = []
        for key, n in zip(keys, counts):
            grade = int(severity_grade(n, thresholds))
            listed = boxes.loc[boxes.image == key, ["class", "confidence", "x_min", "y_min", "x_max", "y_max"]]
            rows.append((key, int(n), grade, names[grade], json.dumps(listed.round(2).to_dict("records"))))
        return pd.DataFrame(rows, columns=OUTPUT_COLUMNS)


mlflow.models.set_model(YoloDetector())
