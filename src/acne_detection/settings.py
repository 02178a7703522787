"""Kedro project settings."""

import os
from urllib.parse import urlparse

from acne_detection.framework.config import ProjectConfigLoader
from acne_detection.framework.hooks import (
    CheckoutLock,
    MlflowTracking,
    PhotoArtifacts,
    PseudonymisedArtifacts,
    RunChecks,
    RunFailure,
    RunReport,
)

HOOKS = (
    CheckoutLock(),
    PhotoArtifacts(),
    PseudonymisedArtifacts(),
    MlflowTracking(),
    RunChecks(),
    RunReport(),
    RunFailure(),
)
# kedro-viz's run hooks would write dataset statistics and run events to .viz/ beside the project
# on every `kedro run`: everything a run writes stays under data/. `kedro viz` itself is unaffected.
# kedro-mlflow's hook is registered above, as MlflowTracking (its parameters logged field by field), not
# by kedro-mlflow's entry point: registered twice, every run would be tracked twice.
DISABLE_HOOKS_FOR_PLUGINS = ("kedro-viz", "kedro_viz", "kedro-mlflow", "kedro_mlflow")


def tracking_uri(default: str) -> str:
    """``MLFLOW_TRACKING_URI`` when set (a team server, a colleague's store), else the
    configuration's ``default``: kedro-mlflow itself reads the variable only when
    ``mlflow.yml`` has no URI at all."""
    return os.environ.get("MLFLOW_TRACKING_URI") or default


def local_artifacts(location: str, uri: str) -> str | None:
    """The experiment's artifact folder for a local store (SQLite, files); ``None`` for a
    tracking server, so that the server chooses (``mlflow-artifacts:/``) and proxies the
    artifacts. kedro-mlflow would turn a relative folder into an absolute path on this
    machine, which a server's clients would then write to directly, bypassing the proxy."""
    return location if urlparse(uri).scheme in ("", "file", "sqlite") else None


CONFIG_LOADER_CLASS = ProjectConfigLoader  # --params merged key by key in every environment
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "custom_resolvers": {"tracking_uri": tracking_uri, "local_artifacts": local_artifacts},
    "merge_strategy": {"mlflow": "soft"},  # an environment's mlflow.yml overrides single keys
}
