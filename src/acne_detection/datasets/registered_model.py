"""``RegisteredDetector``: the trained weights and their model record, logged as a pyfunc model and registered."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import weakref
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow
from kedro.io import AbstractDataset, DatasetError

from acne_detection.core.runtimes import runtime_entry
from acne_detection.model.record import ModelRecord

logger = logging.getLogger(__name__)


class RegisteredDetector(AbstractDataset[dict[str, Any], Any]):
    """Saving logs ``{"weights": path, "record": ModelRecord, "runtime_model": path or None,
    "grade_classifier": path or None, "description": markdown or None}`` into the active MLflow
    run as a pyfunc model (``acne_detection/model/served.py``, logged as code), the record as
    its configuration, and registers it under ``name``, the record as the new version's tags
    (``ModelRecord.to_tags``, set as the version is created) and the description (the model card)
    on its page. Weights already registered with the same record are not registered again (a
    card missing there, from a registration stopped early, is added); with another record (eval
    ran again), they are registered as a new version: a version is never changed. Loading
    returns the latest version as an ``mlflow.pyfunc`` model, its files fetched once into
    ``fetched`` (``framework.tracking.fetch_artifacts``: MLflow's own load leaves a copy in the
    system's temporary folder each time).

    Example catalog entry::

        registered_model:
          type: acne_detection.datasets.RegisteredDetector
          name: acne-detector
          fetched: data/06_models/fetched

    Args:
        name: the registered model's name in the MLflow Model Registry.
        fetched: the folder loaded versions are copied into, one folder each; without one, a
            temporary folder removed when the loaded model is.
    """

    def __init__(self, *, name: str, fetched: str | None = None, metadata: dict[str, Any] | None = None) -> None:
        self._name = name
        self._fetched = Path(fetched) if fetched else None
        self.metadata = metadata

    def load(self) -> Any:
        from acne_detection.framework.tracking import fetch_artifacts

        uri = f"models:/{self._name}/latest"
        if self._fetched is not None:
            return mlflow.pyfunc.load_model(str(fetch_artifacts(uri, self._fetched)))
        folder = tempfile.mkdtemp(prefix="acne-registered-")
        try:
            model = mlflow.pyfunc.load_model(uri, dst_path=folder)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        # The files are read after the load (an exported runtime at its first prediction, the logged
        # code): the folder goes with the loaded model, or at exit, never by a forked child dropping
        # its copy. (Not with the Python model inside: MLflow's models-from-code holds that in a global.)
        weakref.finalize(model, _remove_in, os.getpid(), folder)
        return model

    def save(self, data: dict[str, Any]) -> None:
        if mlflow.active_run() is None:
            raise DatasetError(f"registering '{self._name}' needs an active MLflow run (kedro-mlflow opens one)")
        from acne_detection.framework.tracking import version_description, versions_with_weights
        from acne_detection.model import served

        record: ModelRecord = data["record"]
        known = [v for v in versions_with_weights(record.model_sha256) if v.name == self._name]
        newest = max(known, key=lambda v: int(v.version)) if known else None
        if newest is not None and record.same_model(ModelRecord.from_tags(newest.tags)):
            # `kedro run --pipeline register` again: these weights are registered with this very record
            if data.get("description") and not newest.description:  # a registration stopped before its card
                mlflow.MlflowClient().update_model_version(
                    self._name, newest.version, description=version_description(data["description"], newest.run_id)
                )
                logger.warning(
                    "%s version %s had no model card (its registration was stopped): added", self._name, newest.version
                )
            logger.info(
                "%s version %s already holds these weights and this record: not registered again",
                self._name,
                newest.version,
            )
            return
        if newest is not None:  # a version is never changed: the record changed (eval ran again), so a new version
            logger.info(
                "%s version %s holds these weights with another record: registering a new version",
                self._name,
                newest.version,
            )
        package = Path(served.__file__).parents[1]  # acne_detection/
        info = mlflow.pyfunc.log_model(
            name="detector",
            python_model=str(Path(served.__file__).with_name("pyfunc_model.py")),  # models from code: no pickle
            code_paths=[str(package)],  # the package itself, so loading needs no install of this project
            artifacts={
                "weights": str(data["weights"]),
                # the weights exported for the record's runtime (ONNX, OpenVINO), served as they were measured
                **({"runtime_model": str(data["runtime_model"])} if data.get("runtime_model") else {}),
                # the whole-photo grade classifier, where the grade model reads it
                **({"grade_classifier": str(data["grade_classifier"])} if data.get("grade_classifier") else {}),
            },
            model_config=record.to_config(),
            signature=_signature(record),
            pip_requirements=[f"{p}=={version(p)}" for p in _served_packages(record)],
        )
        # the version is created with its record's tags in one call: a registration stopped at any
        # point leaves no version without its threshold (at worst a version without its card, which
        # the next registration adds)
        registered = mlflow.register_model(info.model_uri, self._name, tags=record.to_tags())
        if data.get("description"):  # the model card: what the MLflow UI shows on the version's page
            mlflow.MlflowClient().update_model_version(
                self._name, registered.version, description=version_description(data["description"], registered.run_id)
            )
        logger.info(
            "Registered model %s version %s (serves at confidence %s by default)",
            self._name,
            registered.version,
            record.threshold,
        )

    def _exists(self) -> bool:
        return False

    def _describe(self) -> dict[str, Any]:
        return {"name": self._name, "fetched": str(self._fetched) if self._fetched else None}


def _remove_in(owner: int, folder: str) -> None:
    """Remove ``folder`` when this is the process ``owner`` that made it."""
    if os.getpid() == owner:
        shutil.rmtree(folder, ignore_errors=True)


def _signature(record: ModelRecord) -> Any:
    """What a request sends and gets back; its ``conf`` defaults to the record's operating point."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    from acne_detection.model import served

    return ModelSignature(
        inputs=Schema([ColSpec("string", "image", required=False), ColSpec("string", "image_b64", required=False)]),
        outputs=Schema(
            [
                ColSpec(kind, name, required=name not in served.OPTIONAL_OUTPUTS)
                for name, kind in served.OUTPUT_TYPES.items()
            ]
        ),
        params=ParamSchema(
            [
                ParamSpec("conf", "double", float(record.threshold)),
                ParamSpec("imgsz", "long", 0),
                ParamSpec("slicing", "string", str(record.predict.get("slicing", "auto"))),
            ]
        ),
    )


def _served_packages(record: ModelRecord) -> list[str]:
    """What the served model imports: the project's own dependencies, and its runtime's (the table's entry)."""
    runtime = runtime_entry(str(record.predict.get("runtime", "torch")))
    base = ["ultralytics", "torch", "torchvision", "pandas", "mlflow", "sahi", "pillow", "pi-heif", "pydantic"]
    return [*base, *runtime.served]
