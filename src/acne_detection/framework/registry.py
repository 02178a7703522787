"""The MLflow Model Registry, written to from one place: what nodes hand over (a model card, a
model record) reaches the versions holding the same weights here, never through a client a node
makes itself."""

from __future__ import annotations

import logging

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from acne_detection.framework.tracking import versions_with_weights

logger = logging.getLogger(__name__)


def describe_registered_versions(sha256: str, card: str) -> None:
    """Put ``card`` (markdown) on every registered version whose weights have this SHA-256, as the
    description the MLflow UI shows on the version's page. A registry that cannot be reached is
    logged, not raised: it must not fail an evaluation."""
    if not sha256:
        return
    try:
        for v in versions_with_weights(sha256):
            MlflowClient().update_model_version(v.name, v.version, description=card)
    except MlflowException as err:
        logger.warning("Could not put the model card on the registered model: %s", err)
