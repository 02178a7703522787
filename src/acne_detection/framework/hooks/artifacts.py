"""What reaches the tracking store: no photographs (``tracking.log_photos``), and photo names
only as pseudonyms (``tracking.pseudonymize``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from acne_detection.core.params import parse

logger = logging.getLogger(__name__)


# Artifacts made of photographs' pixels: the augmentation previews, the error gallery and the
# predict report's thumbnails (annotated copies from predict are never logged).
PHOTO_ARTIFACTS = ("augmentation_preview", "augmentation_panels", "error_gallery", "prediction_report")


class PhotoArtifacts:
    """With ``tracking.log_photos: false``, figures made of photos are written under ``data/``
    as usual but not sent to the MLflow tracking store (a shared server holds metrics, tables,
    plots and the model, and no photograph)."""

    @hook_impl
    def after_catalog_created(self, catalog: Any, parameters: dict[str, Any]) -> None:
        # Kedro hands the parameters as catalog entries: "parameters", "params:tracking", ...
        if parse("tracking", parameters.get("params:tracking") or {}).log_photos:
            return
        for name in PHOTO_ARTIFACTS:
            dataset = catalog.get(name) if name in catalog else None
            if dataset is not None and hasattr(dataset, "_logging_activated"):
                dataset._logging_activated = False
        logger.info(
            "tracking.log_photos is false: %s stay on this machine, not in the tracking store",
            ", ".join(PHOTO_ARTIFACTS),
        )


class PseudonymisedArtifacts:
    """With ``tracking.pseudonymize: true``, what is logged to the tracking store names photos
    by their pseudonyms (``acne_detection.core.pseudonyms``): each artifact is still written under
    ``data/`` with the real names, and a pseudonymised copy of it is logged in its place. Plots
    carry no photo name and are logged as they are; figures made of photos (whose titles name
    them) are not logged at all. Grouping, splits and metrics are computed before any of this,
    on the real names. ``data/08_reporting/pseudonyms.csv`` joins names and pseudonyms locally.
    """

    MAPPING = Path("data") / "08_reporting" / "pseudonyms.csv"

    def __init__(self) -> None:
        self._pseudonyms: Any = None
        self._logged: dict[str, tuple[Any, str | None]] = {}
        self._folders: list[Path] = []
        self._project = Path.cwd()

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        from acne_detection.core.pseudonyms import Pseudonyms, load_key

        self._pseudonyms, self._logged = None, {}
        if parse("tracking", context.params.get("tracking") or {}).pseudonymize:
            self._project = Path(context.project_path)
            self._pseudonyms = Pseudonyms(load_key(self._project))

    @hook_impl
    def after_catalog_created(self, catalog: Any) -> None:
        if self._pseudonyms is None:
            return
        self._folders = []
        for name in catalog.keys():
            if name.startswith("params:") or name == "parameters":
                continue
            dataset = catalog.get(name)
            if name in ("raw_export", "new_photos") and getattr(dataset, "_path", None):
                self._folders.append(Path(dataset._path))
            if not getattr(dataset, "_logging_activated", False) or not hasattr(dataset, "artifact_path"):
                continue  # metrics and tags carry no photo name
            dataset._logging_activated = False  # kedro-mlflow would log the file with its real names
            if name not in PHOTO_ARTIFACTS:
                self._logged[name] = (dataset, dataset.artifact_path)
        logger.info(
            "tracking.pseudonymize is true: photo names are logged as keyed hashes; %s stay on this machine",
            ", ".join(PHOTO_ARTIFACTS),
        )

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any) -> None:
        if dataset_name not in self._logged:
            return
        import tempfile

        import mlflow

        if mlflow.active_run() is None:
            return
        dataset, artifact_path = self._logged[dataset_name]
        local = Path(dataset._filepath)
        for folder in self._folders:  # every file name of the export and the photo folder, for free text
            self._pseudonyms.learn_folder(folder)
        self._folders = []
        with tempfile.TemporaryDirectory() as tmp:
            copy = self._pseudonyms.file(local, Path(tmp))
            mlflow.log_artifact(str(copy or local), artifact_path)

    @hook_impl
    def after_pipeline_run(self) -> None:
        if self._pseudonyms is None:
            return
        import pandas as pd

        mapping = self._project / self.MAPPING
        mapping.parent.mkdir(parents=True, exist_ok=True)
        known = pd.read_csv(mapping, dtype=str, keep_default_na=False) if mapping.exists() else None
        joined = pd.concat([known, self._pseudonyms.mapping()]) if known is not None else self._pseudonyms.mapping()
        joined.drop_duplicates().sort_values("name").to_csv(mapping, index=False)  # earlier runs' names stay
        logger.info("Photo names and their pseudonyms on the tracking store: %s (this machine only)", mapping)
