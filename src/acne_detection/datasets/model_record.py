"""``ModelRecordDataset``: the deployed model's record, where it lives (the local JSON file eval
writes, and the registered versions' tags, read by weights)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset

from acne_detection.core.grading import GradingRule
from acne_detection.framework.registry import registered_record
from acne_detection.model.record import ModelRecord

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelRecords:
    """What the dataset loads: the local record (the last eval's), and the registry behind it."""

    local: ModelRecord | None

    def for_model(self, spec: str | None, sha256: str, rule: GradingRule) -> tuple[ModelRecord | None, str]:
        """The record of the weights with this SHA-256: eval's, if it evaluated these very
        weights, else the registered version's (``models:/`` spec, or the newest version with
        these weights), else ``None``. Also the registered version's name ("" when none)."""
        record, version = registered_record(spec, sha256, rule)
        if self.local is not None and self.local.model_sha256 == sha256:
            return self.local, version
        return record, version


class ModelRecordDataset(AbstractDataset[ModelRecord, ModelRecords]):
    """Saving writes the record to ``filepath`` (JSON, replaced whole, never half-written);
    loading gives ``ModelRecords``: the local record (``None`` before any eval) and the
    registry's, by weights (each registered version carries the record it was registered with,
    as its ``model_record`` tag and its configuration: ``RegisteredDetector``; a version is never
    changed after, a changed record is registered as a new version).

    Example catalog entry::

        model_record:
          type: acne_detection.datasets.ModelRecordDataset
          filepath: data/06_models/model_record.json
    """

    def __init__(self, *, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = Path(filepath)
        self.metadata = metadata

    def load(self) -> ModelRecords:
        if not self._filepath.is_file():
            legacy = self._filepath.with_name("model_threshold.json")
            if legacy.is_file():
                logger.warning(
                    "%s was written by an earlier release, which kept a model's record in another form: "
                    "run `kedro run --pipeline eval` to record this model again",
                    legacy,
                )
            return ModelRecords(None)
        return ModelRecords(ModelRecord.from_json(self._filepath.read_text()))

    def save(self, data: ModelRecord) -> None:
        self._filepath.parent.mkdir(parents=True, exist_ok=True)
        part = self._filepath.with_name(self._filepath.name + ".part")
        part.write_text(data.to_json())
        part.replace(self._filepath)  # never a half-written record

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
