"""Glue between nodes and MLflow: metric shaping, fetching a model to evaluate, and the runs
training writes into (the active run, a sweep's child runs, a worker process's run)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from kedro.io import DatasetError

from acne_detection.core.params import TrainParams


def to_mlflow_metrics(metrics: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Shape a flat dict for kedro-mlflow's ``MlflowMetricsHistoryDataset`` (logged at step 0).

    Args:
        metrics: name to number; non-numeric values (names, flags) are left out.

    Returns:
        ``{name: {"value": float, "step": 0}}``.
    """
    return {
        name: {"value": float(value), "step": 0}
        for name, value in metrics.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }


def resolve_model(spec: str | None, trained: Path) -> tuple[Path, str]:
    """Find the checkpoint to evaluate (a ``runs:/`` or ``models:/`` one is fetched once into
    ``fetched/`` beside ``trained``: ``fetch_artifacts``).

    Args:
        spec: ``None`` (the model the last ``train`` saved), a checkpoint path,
            ``runs:/<run_id>`` (the weights logged by that training run) or
            ``models:/<name>/<version or alias>`` (a registered model version).
        trained: where the ``train`` pipeline saves its checkpoint.

    Returns:
        A local checkpoint path and a description of where it came from.

    Raises:
        DatasetError: the checkpoint cannot be found; the message says what to do.
    """
    if not spec:
        if not trained.is_file():
            raise DatasetError(
                f"{trained}: no trained model yet; run `kedro run --pipeline train` first, "
                "or set eval.model to a checkpoint, runs:/<run_id> or models:/<name>/<version>"
            )
        return trained, "trained_weights"
    if spec.startswith(("runs:/", "models:/")):
        uri = f"{spec.rstrip('/')}/model" if spec.startswith("runs:/") else spec  # train logs weights under model/
        local = fetch_artifacts(uri, trained.parent / "fetched")
        found = sorted(local.rglob(trained.name)) or sorted(local.rglob("*.pt"))  # the weights, not the classifier
        if not found:
            raise DatasetError(f"{spec}: no .pt checkpoint among its artifacts ({local})")
        return found[0], spec
    path = Path(spec).expanduser()
    if not path.is_file():
        raise DatasetError(f"eval.model: {path} does not exist")
    return path, str(path)


def fetch_artifacts(uri: str, into: Path) -> Path:
    """The artifacts ``uri`` names, downloaded once into a folder of their own under ``into`` and
    reused after.

    MLflow's download without a destination makes a temporary folder per call that nothing
    removes: each eval or predict of a ``runs:/`` or ``models:/`` model, and each load of the
    served model, left a copy of the weights in the system's temporary folder, until a server's
    disk filled. A run's artifacts and a registered version never change, so a whole copy is
    reused. What it is a copy of is written inside it (``FETCHED``: the stores and, for a
    version, its name, number, source, run and creation time), so a store made anew at the same
    address, whose version 1 is another model, gets a copy of its own, and a copy emptied by
    ``make clean-outputs`` (files removed, folders kept) is fetched again. One process fetches
    a model at a time (a lock beside it); the copy is downloaded beside its place and renamed
    into it, so a download killed midway is never taken for one, and its leftover is removed by
    the next fetch of the same model.

    Args:
        uri: ``runs:/<run_id>/<path>``, ``models:/<name>/<version, latest or alias>``,
            ``models:/<name>@<alias>`` or ``models:/<model id>`` (a logged model); an alias is
            resolved to its version first.
        into: the folder the copies live in.

    Returns:
        The folder holding what ``uri`` names (a model version's ``MLmodel`` at its root; a
        ``runs:/`` path's files under their last name).

    Raises:
        DatasetError: a URI of another form, or the store holds no files for it.
    """
    import mlflow
    from filelock import FileLock

    label, uri, identity = _fetch_identity(uri)
    key = f"{re.sub(r'[^A-Za-z0-9._-]+', '_', label)[:80]}-{hashlib.sha256(identity.encode()).hexdigest()[:12]}"
    into = into.absolute()  # MLflow answers with absolute paths
    target = into / key
    into.mkdir(parents=True, exist_ok=True)
    with FileLock(str(into / f".{key}.lock"), timeout=900):
        for dead in into.glob(f".{key}.partial-*"):  # left by a fetch that was killed: none runs now
            shutil.rmtree(dead, ignore_errors=True)
        found = _whole_copy(target, identity)
        if found is not None:
            return found
        shutil.rmtree(target, ignore_errors=True)  # another model's, or emptied: fetched again
        partial = into / f".{key}.partial-{os.getpid()}-{time.time_ns()}"
        partial.mkdir()  # not mkdtemp: its 0o700 would hide the copy from the project's other users
        try:
            root = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(partial)))
            if not _holds_files(root):
                raise DatasetError(f"{uri}: the tracking store holds no files for it")
            relative = root.relative_to(partial).as_posix()
            (partial / FETCHED).write_text(json.dumps({"identity": identity, "root": relative}))
            partial.rename(target)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return target / relative


FETCHED = ".fetched.json"  # inside a fetched copy: what it is a copy of, and where its files are


def _fetch_identity(uri: str) -> tuple[str, str, str]:
    """A model URI's readable name, the URI to download (an alias resolved to its version) and
    its identity: the stores and, for a registered version, what tells it from another store's
    version of the same name and number."""
    import mlflow

    stores = f"{mlflow.get_tracking_uri()} {mlflow.get_registry_uri()}"
    if uri.startswith("runs:/"):
        return "run-" + uri.removeprefix("runs:/").strip("/"), uri, f"{stores} {uri}"  # a run's id is unique
    if not uri.startswith("models:/"):
        raise DatasetError(f"{uri}: a model to fetch is runs:/<run_id>/<path> or models:/<name>/<version>")
    parts = uri.removeprefix("models:/").strip("/").split("/")
    if len(parts) == 1 and "@" not in parts[0]:  # a logged model's id (MLflow 3), unique as a run's is
        return f"logged-{parts[0]}", uri, f"{stores} {uri}"
    if len(parts) > 2:
        raise DatasetError(
            f"{uri}: name a registered version (models:/<name>/<version or alias>, models:/<name>@<alias>) "
            "or a logged model (models:/<model id>), without a path inside it"
        )
    version = registered_version(uri)
    facts = [version.name, version.version, version.source, version.run_id, version.creation_timestamp]
    label = f"model-{version.name}-v{version.version}"
    return label, f"models:/{version.name}/{version.version}", json.dumps([stores, *facts], default=str)


def _whole_copy(target: Path, identity: str) -> Path | None:
    """The folder of what a copy at ``target`` holds, when it is a whole copy of the model
    ``identity`` names; else ``None``."""
    try:
        marker = json.loads((target / FETCHED).read_text())
    except (OSError, ValueError):
        return None
    root = target / str(marker.get("root", ""))
    return root if marker.get("identity") == identity and _holds_files(root) else None


def _holds_files(folder: Path) -> bool:
    """Whether ``folder`` holds a file, the marker aside (a download that brought nothing, or a copy
    ``make clean-outputs`` emptied, holds none)."""
    return any(p.is_file() and p.name != FETCHED for p in folder.rglob("*"))


def model_run_id(spec: str) -> str:
    """The MLflow run that produced a model given as ``eval.model``.

    Args:
        spec: ``runs:/<run_id>``, ``models:/<name>/<version>``, ``models:/<name>@<alias>``,
            ``models:/<name>/<alias>`` or a checkpoint path.

    Returns:
        The run id; ``"unknown"`` for a bare checkpoint file, whose origin is not recorded.
    """
    if spec.startswith("runs:/"):
        return spec.removeprefix("runs:/").split("/")[0]
    if not spec.startswith("models:/"):
        return "unknown"
    return registered_version(spec).run_id or "unknown"


def registered_version(spec: str) -> Any:
    """The registry's ``ModelVersion`` a ``models:/<name>/<version>``, ``models:/<name>/latest``,
    ``models:/<name>/<alias>`` or ``models:/<name>@<alias>`` URI names."""
    from mlflow.tracking import MlflowClient

    ref = spec.removeprefix("models:/").strip("/")
    name, _, ref = ref.partition("@") if "@" in ref else ref.rpartition("/")
    client = MlflowClient()
    if ref.isdigit():
        return client.get_model_version(name, ref)
    if ref.lower() == "latest":
        versions = client.search_model_versions(f"name = '{name}'")
        if not versions:  # as MLflow says a version it lacks: callers that look one up catch its exception
            from mlflow.exceptions import MlflowException
            from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

            raise MlflowException(
                f"no version of '{name}' is registered in {client.tracking_uri} (`kedro run` registers one after eval)",
                error_code=RESOURCE_DOES_NOT_EXIST,
            )
        return max(versions, key=lambda v: int(v.version))
    return client.get_model_version_by_alias(name, ref)


def mark_run_killed(run_id: str | None) -> None:
    """Mark an interrupted run KILLED: a SIGKILL'd or power-cut process never ends its MLflow
    run, which would otherwise show RUNNING in the UI forever. Runs already ended, and runs
    the store does not know, are left as they are.

    Args:
        run_id: the interrupted run (from the resume record), or ``None``.
    """
    if not run_id:
        return
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return
    active = mlflow.active_run()
    if run.info.status == "RUNNING" and (active is None or active.info.run_id != run_id):
        client.set_terminated(run_id, status="KILLED")


def current_run_id() -> str | None:
    """The id of the MLflow run active in this process (kedro-mlflow's, during a node), if any:
    the run training logs into and records with the model."""
    import mlflow

    run = mlflow.active_run()
    return run.info.run_id if run else None


def tracking_uri() -> str:
    """This process's MLflow tracking URI, for another process to log into the same store."""
    import mlflow

    return mlflow.get_tracking_uri()


def portable_tracking_uri() -> str:
    """``tracking_uri`` as a process elsewhere (a Ray worker, started in another folder) reaches
    the same store: a relative SQLite store made absolute; a server's address as it is.

    Returns:
        The tracking URI (``sqlite:////abs/path/mlflow.db``, ``http://host:5000``).
    """
    uri = tracking_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).resolve())
    return uri


# MLflow's own limits on one ``log_batch`` call (100 params, 1000 metrics) and one param value (500
# characters), with a margin for the batch sizes.
PARAMS_PER_BATCH = 90
METRICS_PER_BATCH = 900
PARAM_CHARS = 500


def open_child_run(parent: str | None, *, run_name: str, params: dict[str, Any], tags: dict[str, str]) -> str | None:
    """Open a run nested under ``parent`` (in its experiment) and log its parameters.

    Args:
        parent: the parent run's id (``None``: tracking is off, nothing is opened).
        run_name: the child's name in the MLflow UI.
        params: flat name to value; values are logged as text, cut to MLflow's 500 characters.
        tags: set on the child beside ``mlflow.parentRunId``.

    Returns:
        The child run's id, or ``None`` when ``parent`` is ``None``.
    """
    if not parent:
        return None
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    experiment = client.get_run(parent).info.experiment_id
    child = client.create_run(experiment, run_name=run_name, tags={"mlflow.parentRunId": parent, **tags})
    items = list(params.items())
    for start in range(0, len(items), PARAMS_PER_BATCH):
        batch = items[start : start + PARAMS_PER_BATCH]
        client.log_batch(child.info.run_id, params=[Param(k, str(v)[:PARAM_CHARS]) for k, v in batch])
    return child.info.run_id


def close_child_run(
    run_id: str | None,
    *,
    metrics: dict[str, Any],
    status: str,
    series: dict[str, Iterable[tuple[int, float]]] | None = None,
    tags: dict[str, str] | None = None,
) -> None:
    """Log a child run's results and end it (``open_child_run``'s counterpart).

    Args:
        run_id: the child run (``None``: tracking is off, nothing is logged).
        metrics: name to value, logged at step 0; values that are not numbers are left out.
        status: how the run ended (``FINISHED``, ``FAILED``).
        series: name to ``(step, value)`` points, logged per step (a learning curve).
        tags: set on the run (known only once it ran: where it ran).

    Non-finite values (NaN, inf) are left out: MLflow's stores reject some of them.
    """
    if not run_id:
        return
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    stamp = int(time.time() * 1000)
    batch = [Metric(k, float(v), stamp, 0) for k, v in metrics.items() if isinstance(v, int | float)]
    for name, points in (series or {}).items():
        batch += [Metric(name, float(value), stamp, int(step)) for step, value in points]
    batch = [m for m in batch if np.isfinite(m.value)]
    for start in range(0, len(batch), METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=batch[start : start + METRICS_PER_BATCH])
    for key, value in (tags or {}).items():
        client.set_tag(run_id, key, value)
    client.set_terminated(run_id, status)


@contextmanager
def logging_into(run_id: str | None, uri: str | None) -> Iterator[None]:
    """Make ``run_id`` (opened elsewhere: another process, or ``open_child_run``) this process's
    active run for the block, so training logs into it; the run ends ``FINISHED``, or ``FAILED``
    if the block raises. Inside a run already active (a sweep recipe trained in the node's own
    process), it stacks on that run, which is active again after the block.

    Args:
        run_id: the run to log into (``None``: tracking is off, nothing is active).
        uri: the tracking URI the run lives at (``None``: this process's own).

    Yields:
        Nothing; the run is active inside the block.
    """
    import mlflow

    if uri:
        mlflow.set_tracking_uri(uri)
    if not run_id:
        yield
        return
    with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
        yield


def log_step_metrics(metrics: dict[str, float], *, step: int) -> None:
    """Log metrics at ``step`` into the active run; nothing when no run is active.

    Args:
        metrics: name to value.
        step: the step (an epoch).
    """
    import mlflow

    if mlflow.active_run():
        mlflow.log_metrics(metrics, step=step)


# MLflow's SQL stores (PostgreSQL, SQLite) hold a model version's description in 5,000 characters
# (``model_versions.description``, String(5000)); its file store holds any length.
DESCRIPTION_CHARS = 5000


def version_description(card: str, run_id: str) -> str:
    """A model card as a registered version's description: whole where it fits the registry's
    5,000 characters; else its last section (the caveats) whole, the lines before it up to the
    last one that fits, and between them where the whole card is (the run's
    ``model/model_card.md``). A card never fails a registration by its length."""
    if len(card) <= DESCRIPTION_CHARS:
        return card
    pointer = (
        f"\n\n*Cut to the registry's 5,000 characters: the whole card is `model/model_card.md` "
        f"of MLflow run `{run_id}`.*\n\n"
    )
    start = card.rfind("\n## ")
    tail = card[start + 1 :] if start > 0 and len(card) - start < DESCRIPTION_CHARS // 2 else ""
    head = card[: DESCRIPTION_CHARS - len(pointer) - len(tail)]
    head = head[: head.rfind("\n") + 1 or len(head)].rstrip("\n")
    return head + (pointer if tail else pointer.rstrip("\n") + "\n") + tail


def versions_with_weights(sha256: str) -> list[Any]:
    """Every registered model version whose weights have this SHA-256 (train tags
    ``model_sha256`` on each version it registers)."""
    from mlflow.tracking import MlflowClient

    return [v for v in MlflowClient().search_model_versions() if v.tags.get("model_sha256") == sha256]


def model_version_tag(spec: str | None, sha256: str) -> dict[str, str]:
    """What the registry says about a model: its version name and the tags ``eval`` set on it
    (``operating_threshold``), for a ``models:/`` spec, or for the version whose weights have
    this SHA-256 (a ``runs:/`` spec or the trained model).

    Args:
        spec: ``predict.model`` or ``eval.model``.
        sha256: the checkpoint's SHA-256.

    Returns:
        ``model_version`` ("acne-detector/3") and the version's tags; ``{}`` when the registry
        has no such version (or cannot be reached).
    """
    from mlflow.exceptions import MlflowException

    try:
        if spec and spec.startswith("models:/"):
            version = registered_version(spec)
        else:
            found = versions_with_weights(sha256)
            if not found:
                return {}
            version = max(found, key=lambda v: int(v.version))
    except (MlflowException, ValueError):
        return {}
    return {**version.tags, "model_version": f"{version.name}/{version.version}"}


PIPELINE_LABELS = {"__default__": "full run"}


def run_name(pipeline: str, *, dataset: str, train: TrainParams | None, model: str | None, run_id: str) -> str:
    """A run name a person can tell apart in the MLflow UI: pipeline, key settings, a short id.

    Args:
        pipeline: the pipeline run (``__default__`` reads "full run").
        dataset: the export's (or photo folder's) folder name.
        train: the ``train`` parameters when the pipeline trains (epochs, imgsz, device).
        model: the evaluated or predicting model when one is named (``eval.model``/``predict.model``).
        run_id: the MLflow run id (its first 6 characters end the name).

    Returns:
        e.g. "full run · synthetic · 20 ep @ 416 px · 3f9a2c".
    """
    parts = [PIPELINE_LABELS.get(pipeline, pipeline), dataset]
    if train:
        parts.append(f"{train.epochs} ep @ {train.imgsz} px")
    if model:
        parts.append(
            model.rsplit("/", 2)[-2] + "/" + model.rsplit("/", 1)[-1]
            if model.startswith("models:/")
            else Path(model).name
        )
    return " · ".join([*(p for p in parts if p), run_id[:6]])


def run_headline(metrics: dict[str, float], tags: dict[str, str]) -> str:
    """The description of a run (MLflow's ``mlflow.note.content``): its headline figures.

    Args:
        metrics: the run's metrics.
        tags: the run's tags (``gate``, ``skin_tone.check``, ``training.health``).

    Returns:
        Markdown, e.g. "mAP@50 0.942 · recall 0.904 · precision 0.966 · grade accuracy 0.906 · gate PASS".
    """
    named = [
        ("test.mAP50", "mAP@50"),
        ("test.mAP50-95", "mAP@50-95"),
        ("test.recall", "recall"),
        ("test.precision", "precision"),
        ("test.grade_accuracy", "grade accuracy"),
        ("predict.photos_predicted", "photos predicted"),
        ("data.images_accepted", "images accepted"),
    ]
    parts = [
        f"{label} {metrics[key]:.3f}" if not key.startswith(("predict.", "data.")) else f"{label} {metrics[key]:.0f}"
        for key, label in named
        if key in metrics
    ]
    if "gate" in tags:
        parts.append(f"gate **{tags['gate'].upper()}**")
    if "skin_tone.check" in tags:
        parts.append("skin tone: " + tags["skin_tone.check"].split(" (")[0])
    if "training.health" in tags:
        parts.append(f"training {tags['training.health']}")
    return " · ".join(parts) if parts else "no headline metric in this run"


def ui_address(
    tracking_uri: str, experiment_id: str, run_id: str | None = None, *, ui: str = "http://127.0.0.1:5000"
) -> str:
    """Where to look at a run: the tracking server itself, or ``make ui``'s address for a local
    store, opened in MLflow's model-training view (``workflowType=machine_learning``)."""
    base = tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else ui
    page = f"#/experiments/{experiment_id}" + (f"/runs/{run_id}" if run_id else "")
    return f"{base}/{page}?workflowType=machine_learning"
