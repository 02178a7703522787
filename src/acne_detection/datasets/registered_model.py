"""``RegisteredDetector``: the trained weights, logged as a pyfunc model and registered."""

from __future__ import annotations

import logging
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow
from kedro.io import AbstractDataset, DatasetError

logger = logging.getLogger(__name__)


class RegisteredDetector(AbstractDataset[dict[str, Any], Any]):
    """Saving logs ``{"weights": path, "runtime_model": path or None, "tags": {...}}`` into the
    active MLflow run as a pyfunc
    model (``acne_detection/ops/serving.py``, logged as code) and registers
    it under ``name``, the tags on the new version. Loading returns the latest version as an
    ``mlflow.pyfunc`` model.

    Example catalog entry::

        registered_model:
          type: acne_detection.datasets.RegisteredDetector
          name: acne-detector

    Args:
        name: the registered model's name in the MLflow Model Registry.
    """

    def __init__(self, *, name: str, metadata: dict[str, Any] | None = None) -> None:
        self._name = name
        self.metadata = metadata

    def load(self) -> Any:
        return mlflow.pyfunc.load_model(f"models:/{self._name}/latest")

    def save(self, data: dict[str, Any]) -> None:
        if mlflow.active_run() is None:
            raise DatasetError(f"registering '{self._name}' needs an active MLflow run (kedro-mlflow opens one)")
        from mlflow.models import ModelSignature
        from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

        from acne_detection.core.inference import DEFAULT_THRESHOLD
        from acne_detection.framework.tracking import versions_with_weights
        from acne_detection.ops import serving

        config = data.get("config") or {}
        sha = data.get("tags", {}).get("model_sha256")
        known = [v for v in versions_with_weights(sha) if v.name == self._name] if sha else []
        if known:  # `kedro run --pipeline register` again, or eval re-run: the weights are registered already
            logger.info(
                "%s version %s already holds these weights (SHA-256 %s): not registered again",
                self._name,
                max(int(v.version) for v in known),
                sha[:12],
            )
            return
        signature = ModelSignature(
            inputs=Schema([ColSpec("string", "image", required=False), ColSpec("string", "image_b64", required=False)]),
            outputs=Schema([ColSpec(kind, name) for name, kind in serving.OUTPUT_TYPES.items()]),
            params=ParamSchema(
                [
                    # the operating point eval chose for these weights: what a request gets unless it says otherwise
                    ParamSpec("conf", "double", float(config.get("threshold", DEFAULT_THRESHOLD))),
                    ParamSpec("imgsz", "long", 0),
                    ParamSpec("slicing", "string", str((config.get("predict") or {}).get("slicing", "auto"))),
                ]
            ),
        )
        package = Path(serving.__file__).parents[1]  # acne_detection/
        info = mlflow.pyfunc.log_model(
            name="detector",
            python_model=str(Path(serving.__file__).with_name("pyfunc_model.py")),  # models from code: no pickle
            code_paths=[str(package)],  # the package itself, so loading needs no install of this project
            artifacts={
                "weights": str(data["weights"]),
                # the weights exported for predict.runtime (ONNX, OpenVINO), served as they were measured
                **({"runtime_model": str(data["runtime_model"])} if data.get("runtime_model") else {}),
                # the whole-photo grade classifier, where the grade model reads it
                **({"grade_classifier": str(data["grade_classifier"])} if data.get("grade_classifier") else {}),
            },
            model_config=config or None,
            signature=signature,
            pip_requirements=[f"{p}=={version(p)}" for p in _served_packages(config)],
            registered_model_name=self._name,
        )
        client = mlflow.MlflowClient()
        if data.get("description"):  # the model card: what the MLflow UI shows on the version's page
            client.update_model_version(self._name, str(info.registered_model_version), description=data["description"])
        for key, value in data.get("tags", {}).items():
            client.set_model_version_tag(self._name, str(info.registered_model_version), key, str(value))
        logger.info(
            "Registered model %s version %s (serves at confidence %s by default)",
            self._name,
            info.registered_model_version,
            config.get("threshold", DEFAULT_THRESHOLD),
        )

    def _exists(self) -> bool:
        return False

    def _describe(self) -> dict[str, Any]:
        return {"name": self._name}


def _served_packages(config: dict[str, Any]) -> list[str]:
    """What the served model imports: the project's own dependencies, and its runtime's."""
    runtime = str((config.get("predict") or {}).get("runtime", "torch"))
    extra = {"onnx": ["onnxruntime"], "openvino": ["openvino"], "openvino-int8": ["openvino"]}.get(runtime, [])
    return ["ultralytics", "torch", "torchvision", "pandas", "mlflow", "sahi", "pillow", "pi-heif", *extra]
