"""What must hold before a run's first node: parameter groups with known names, MLflow's client
retry settings, a tracking server that answers, a store whose schema exists, an experiment that
exists. ``hooks.RunChecks`` calls them on every run."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from acne_detection.core.params import PARAMETER_GROUPS

# MLflow's HTTP client retries connection errors and 408/429/500/502/503/504 answers, backing off;
# urllib3 sleeps 0, 2f, 4f, 8f ... s between tries (f the factor), plus up to JITTER s at random.
# A run outlives a tracking server's or its PostgreSQL's restart: with f = 1 and 7 retries, the
# tries come 0, 2, 6, 14, 30, 62 and 126 s after the first failure, so a restart of up to about a
# minute is ridden out with twice that to spare, and a server back after 40 s is noticed within
# 22 s (MLflow's own f = 2 waits 4, 12, 28, 60, 124, 244 s: 64 s blind once past a minute). The
# jitter spreads the retries of a team's runs that lost the same server. The timeout bounds a
# request to a server that accepted it and hangs (a backend gone silent): 60 s per try, not MLflow's
# 120, so one call gives up within about 10 minutes (8 tries x 60 s + 126 s), never hangs for good,
# and a proxied upload of weights still has a minute to be answered. A user's own values win.
CLIENT_RETRIES = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "7",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "1.0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
}


def set_client_retries() -> dict[str, str]:
    """Give MLflow's HTTP client the project's retry settings (``CLIENT_RETRIES``) where the
    environment sets none. Processes the run starts (training workers) inherit them.

    Returns:
        The settings in force, by variable name.
    """
    return {name: os.environ.setdefault(name, value) for name, value in CLIENT_RETRIES.items()}


def tracking_store_uri(mlflow_conf: dict[str, Any], project_path: Path) -> str:
    """The tracking URI a run uses, resolved as kedro-mlflow resolves it (``MLFLOW_TRACKING_URI``
    when ``mlflow.yml`` names none; relative paths against the project root).

    Args:
        mlflow_conf: ``mlflow.yml`` as Kedro loaded it.
        project_path: the project root.

    Returns:
        The URI, as kedro-mlflow will open it.
    """
    from kedro_mlflow.config.kedro_mlflow_config import _validate_uri

    configured = mlflow_conf.get("server", {}).get("mlflow_tracking_uri")
    return _validate_uri(str(project_path), configured or os.environ.get("MLFLOW_TRACKING_URI", "mlruns"))


def open_store(uri: str, *, timeout: float = 300) -> None:
    """Open the tracking store, creating its schema first if it is new, one process at a time.

    MLflow creates a new SQLite store's tables, then runs its Alembic migrations, on first
    opening it, with nothing to stop another process doing the same: two first runs at once on
    one new file raced, and one died ("Online migration expected to match one row", "duplicate
    column name", "table _alembic_tmp_experiments already exists"). Here, before kedro-mlflow or
    anything else reaches the store, an OS file lock beside the SQLite file (``<file>.lock``) is
    held while the store is opened: the first run creates the schema, the other waits, then finds
    it made. A process killed holding the lock releases it. A tracking server creates its schema
    once, when it starts; other databases (a ``postgresql://`` URI used directly) are not locked here.

    Args:
        uri: the tracking URI (see ``tracking_store_uri``).
        timeout: seconds to wait for another process creating the schema.

    Raises:
        RuntimeError: the lock was held for ``timeout`` seconds.
    """
    from filelock import FileLock, Timeout
    from mlflow.tracking import MlflowClient
    from sqlalchemy.engine import make_url

    if not uri.startswith("sqlite:"):
        return
    database = make_url(uri).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    lock = Path(f"{database}.lock")  # relative as SQLite opens it: from the working directory
    try:
        with FileLock(str(lock), timeout=timeout):
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            client.search_experiments(max_results=1)  # the tracking store: tables and migrations
            client.search_registered_models(max_results=1)  # the registry's store, on the same file
    except Timeout:
        raise RuntimeError(
            f"Another process has held {lock} for {timeout:.0f} s while opening the MLflow store {uri}: "
            "it may be stuck creating the store's schema. Stop it, or wait for it and run again."
        ) from None


def ensure_experiment(mlflow_conf: dict[str, Any], project_path: Path) -> None:
    """Create the run's MLflow experiment if it is missing, tolerating another run doing the same.

    kedro-mlflow looks the experiment up, then creates it: two runs starting at once against a
    new store both find none, and the second creation fails (``RESOURCE_ALREADY_EXISTS``, a
    unique-key violation in PostgreSQL), killing that run. Done here first, the loser of the
    race simply finds the winner's experiment. It is created with the tag that opens MLflow's
    UI on its model-training view.

    Args:
        mlflow_conf: ``mlflow.yml`` as Kedro loaded it (``server``, ``tracking``).
        project_path: the project root (relative URIs are resolved against it, as kedro-mlflow does).
    """
    from kedro_mlflow.config.kedro_mlflow_config import _validate_uri
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    experiment = mlflow_conf.get("tracking", {}).get("experiment", {})
    name = experiment.get("name")
    if not name:
        return
    uri = tracking_store_uri(mlflow_conf, project_path)
    kwargs = experiment.get("create_experiment_kwargs") or {}
    location = kwargs.get("artifact_location")
    client = MlflowClient(tracking_uri=uri)
    if client.get_experiment_by_name(name) is not None:
        return
    try:
        client.create_experiment(
            name,
            artifact_location=_validate_uri(str(project_path), location) if location else None,
            tags={**(kwargs.get("tags") or {}), "mlflow.experimentKind": "custom_model_development"},
        )
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def check_tracking_server(uri: str | None, *, timeout: float = 5.0) -> None:
    """Fail fast, and say what to do, when the tracking URI names a server that does not answer.

    Args:
        uri: the tracking URI the run will use.
        timeout: seconds to wait for ``/health``.

    Raises:
        RuntimeError: an ``http(s)`` server that does not answer.
    """
    import urllib.error
    import urllib.request

    if not uri or not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
            return
    except urllib.error.HTTPError:
        return  # it answers (behind a proxy or authentication): MLflow's client will say more
    except OSError as err:
        raise RuntimeError(
            f"The MLflow tracking server at {uri} does not answer ({getattr(err, 'reason', err)}). Start it with "
            '`make server` (README, "Scaling out"), or point MLFLOW_TRACKING_URI at a running one; without '
            "`--env team` and MLFLOW_TRACKING_URI, runs go to this checkout's SQLite store."
        ) from None


def check_parameter_groups(params: dict[str, Any], conf_source: Path) -> None:
    """Refuse top-level parameter keys that are neither a known group nor a runtime parameter
    the configuration uses, so a misspelt ``--params "dta.strict=true"`` is not ignored.

    Args:
        params: every parameter, runtime ones merged in (``context.params``).
        conf_source: the configuration folder, searched for ``${runtime_params:KEY}``.

    Raises:
        ValueError: naming the unknown keys and the known groups.
    """
    used = {
        m.group(1).split(".")[0]
        for path in (conf_source.rglob("*.y*ml") if conf_source.is_dir() else [])
        for m in re.finditer(r"\$\{\s*runtime_params:\s*([\w.-]+)", path.read_text(encoding="utf-8"))
    }
    unknown = sorted(set(params) - set(PARAMETER_GROUPS) - used)
    if unknown:
        raise ValueError(
            f"Unknown parameter group(s) {unknown} (from --params or conf/*/parameters*.yml): the known groups are "
            f"{sorted(PARAMETER_GROUPS)}"
            + (f", and the configuration reads runtime parameters {sorted(used)}" if used else "")
            + '. Check the spelling, e.g. --params "data.strict=true".'
        )
