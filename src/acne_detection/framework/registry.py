"""The MLflow Model Registry for nodes: the model card put on the versions holding the same
weights, and a version's model record read back, never through a client a node makes itself."""

from __future__ import annotations

import json
import logging

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from acne_detection.core.grading import GradingRule
from acne_detection.framework.tracking import model_version_tag, version_description, versions_with_weights
from acne_detection.model.record import ModelRecord

logger = logging.getLogger(__name__)


def describe_registered_versions(sha256: str, card: str) -> None:
    """Put ``card`` (markdown) on every registered version whose weights have this SHA-256, as the
    description the MLflow UI shows on the version's page. A registry that cannot be reached is
    logged, not raised: it must not fail an evaluation."""
    if not sha256:
        return
    try:
        for v in versions_with_weights(sha256):
            MlflowClient().update_model_version(v.name, v.version, description=version_description(card, v.run_id))
    except MlflowException as err:
        logger.warning("Could not put the model card on the registered model: %s", err)


def registered_record(spec: str | None, sha256: str, rule: GradingRule) -> tuple[ModelRecord | None, str]:
    """The record a registered version carries, for a ``models:/`` spec or for the newest
    version whose weights have this SHA-256.

    Args:
        spec: ``predict.model``/``eval.model``.
        sha256: the weights' SHA-256.
        rule: the grading rule a version registered before versions carried their record is
            read under (its ``operating_threshold`` and ``calibration`` tags, the count rule).

    Returns:
        The record (``None``: no such version, or the registry cannot be reached) and the
        version's name ("acne-detector/3"; "" when none).
    """
    tags = model_version_tag(spec, sha256)
    if not tags:
        return None, ""
    record = ModelRecord.from_tags(tags)
    if record is None and tags.get("operating_threshold"):
        record = ModelRecord.default(
            sha256,
            rule,
            threshold=float(tags["operating_threshold"]),
            threshold_rule=tags.get("operating_rule", "registered"),
            calibration=json.loads(tags.get("calibration") or "{}"),
            trained_on=tags.get("trained_on", ""),
        )
    elif record is None:
        record = ModelRecord.default(sha256, rule, trained_on=tags.get("trained_on", ""))
    return record, tags["model_version"]
