"""The trained detector as an MLflow pyfunc model: load it anywhere MLflow runs and call it
on images, getting boxes, classes and confidences back.

MLflow logs this file itself ("models from code"), so loading needs no pickled object and
not this package, only ``ultralytics``.
"""

from __future__ import annotations

from typing import Any

import mlflow.models
import mlflow.pyfunc
import pandas as pd

OUTPUT_COLUMNS = ["image", "class_id", "class", "confidence", "x_min", "y_min", "x_max", "y_max"]


class YoloDetector(mlflow.pyfunc.PythonModel):
    """Wraps an Ultralytics checkpoint (the ``weights`` artifact).

    ``predict`` takes a DataFrame with an ``image`` column of file paths and returns one row
    per detected lesion. ``params`` may set ``conf`` (default 0.25) and ``imgsz`` (default 0:
    the training size stored in the checkpoint).
    """

    def load_context(self, context: Any) -> None:
        from ultralytics import YOLO

        self.model = YOLO(context.artifacts["weights"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        params = params or {}
        train_args = self.model.ckpt.get("train_args", {}) if isinstance(self.model.ckpt, dict) else {}
        imgsz = int(params.get("imgsz") or train_args.get("imgsz", 640))  # 0: the training size
        rows = []
        for image in model_input["image"]:
            result = next(iter(self.model.predict(str(image), conf=float(params.get("conf", 0.25)), imgsz=imgsz,
                                                  device="cpu", verbose=False)))
            for cls, conf, box in zip(result.boxes.cls.tolist(), result.boxes.conf.tolist(), result.boxes.xyxy.tolist()):
                rows.append((str(image), int(cls), result.names[int(cls)], float(conf), *box))
        return pd.DataFrame(rows, columns=OUTPUT_COLUMNS)


mlflow.models.set_model(YoloDetector())
