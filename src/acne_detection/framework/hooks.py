"""Hooks: settings that must hold for every run, and the closing message of a run."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl
from kedro_mlflow.framework.hooks import MlflowHook

from acne_detection.core.params import PARAMETER_GROUPS, parse

logger = logging.getLogger(__name__)


def _close_reopened_runs(status: str = "FINISHED") -> None:
    """End the run kedro-mlflow left on MLflow's run stack.

    kedro-mlflow 2.0.3 re-opens its run before every node (for thread safety); MLflow 3.17
    stacks each re-open, and kedro-mlflow's single ``end_run`` pops only one. The run is
    marked finished either way, but a second ``KedroSession`` in the same process would log
    into the stale one instead of opening its own.
    """
    import mlflow

    while mlflow.active_run() is not None:
        mlflow.end_run(status=status)


class MlflowTracking(MlflowHook):
    """kedro-mlflow's hook (one MLflow run per ``kedro run``, each node's parameters logged),
    registered by the project instead of by kedro-mlflow's entry point (``settings.py``) for one
    reason: Kedro validates every ``params:<group>`` input whose node argument is annotated with
    a model of ``acne_detection.core.params`` and hands the node that model. kedro-mlflow would
    log such a model as one parameter (its ``str``); here it logs its fields, flattened as before
    (``train.epochs``, ``eval.gate.map50``), each model with every setting it holds."""

    @hook_impl
    def before_node_run(self, node: Any, catalog: Any, inputs: dict[str, Any], is_async: bool) -> None:
        from pydantic import BaseModel

        plain = {name: v.model_dump(mode="json") if isinstance(v, BaseModel) else v for name, v in inputs.items()}
        super().before_node_run(node=node, catalog=catalog, inputs=plain, is_async=is_async)


class CheckoutLock:
    """One run at a time writes a checkout's ``data/`` folder (datasets, the training work
    folder, reports): a second ``kedro run`` in the same checkout is refused with a message,
    rather than overwriting the first one's files mid-run. The lock is an OS file lock
    (``filelock``), so a run killed with SIGKILL releases it. ``predict`` writes only its own
    folder and may run beside training. Two people share a tracking server from two copies of
    the project, not from one checkout (see README, "Scaling out").
    """

    EXEMPT = frozenset({"predict", "review", "reviewed"})

    def __init__(self) -> None:
        self._lock: Any = None

    def acquire(self, project_path: Path, pipeline_name: str) -> None:
        import json
        import os
        import time

        from filelock import FileLock, Timeout

        data = project_path / "data"
        data.mkdir(exist_ok=True)
        lock, info = FileLock(str(data / ".kedro_run.lock")), data / ".kedro_run.json"
        try:
            lock.acquire(timeout=0)
        except Timeout:
            holder = json.loads(info.read_text()) if info.exists() else {}
            raise RuntimeError(
                f"Another kedro run is using this checkout's data folder ({data}): pipeline "
                f"'{holder.get('pipeline', '?')}', process {holder.get('pid', '?')}, "
                f"started {holder.get('started', '?')}. "
                "Two runs in one checkout would overwrite each other's datasets and training folder: wait for it to "
                "finish, or run from another copy of the project (both can log to one MLflow server: see README, "
                '"Scaling out").'
            ) from None
        info.write_text(
            json.dumps({"pipeline": pipeline_name, "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S")})
        )
        self._lock = lock

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    @hook_impl(tryfirst=True)  # before kedro-mlflow opens a run: a refused run leaves none behind
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        names = run_params.get("pipeline_names") or [run_params.get("pipeline_name") or "__default__"]
        if set(names) <= self.EXEMPT:
            return
        self.acquire(Path(run_params.get("project_path") or Path.cwd()), ", ".join(names))

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        self.release()

    @hook_impl
    def on_pipeline_error(self, error: Exception, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        self.release()


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


class RunChecks:
    """Before any node runs: every parameter group is validated (a typo names itself), the
    tracking server answers, and the experiment exists with its artifact location."""

    @hook_impl(tryfirst=True)  # before kedro-mlflow, which would retry a dead server for minutes
    def after_context_created(self, context: Any) -> None:
        loader = context.config_loader
        if "mlflow" not in loader.config_patterns:  # kedro-mlflow's own patterns, registered when its hook runs
            loader.config_patterns.update({"mlflow": ["mlflow*", "mlflow*/**", "**/mlflow*"]})
        mlflow_conf = loader["mlflow"]
        check_tracking_server(mlflow_conf.get("server", {}).get("mlflow_tracking_uri"))
        params = context.config_loader["parameters"]  # as written: checked before Kedro validates the nodes' models
        check_parameter_groups(params, Path(context.project_path) / context.config_loader.conf_source)
        for group in PARAMETER_GROUPS:
            if group in params:
                parse(group, params[group])
        ensure_experiment(mlflow_conf, Path(context.project_path))


class RunReport:
    """Names the MLflow run for what it does (the stages that run, read from the nodes' stage
    tags), and closes it by saying where its outputs are and how to look at them."""

    @hook_impl(trylast=True)  # after kedro-mlflow has opened the run
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        import mlflow

        from acne_detection.framework.tracking import run_name

        run = mlflow.active_run()
        if run is None:
            return
        names = run_params.get("pipeline_names") or ["__default__"]

        def _param(name: str) -> Any:
            return catalog.load(f"params:{name}") if f"params:{name}" in catalog else None

        stages = {tag for node in pipeline.nodes for tag in node.tags}  # each pipeline tags its nodes by stage
        trains, predicts = "train" in stages, "predict" in stages
        source = (
            catalog.get("new_photos" if predicts else "raw_export")
            if ("new_photos" if predicts else "raw_export") in catalog
            else None
        )
        dataset = Path(str(getattr(source, "_path", ""))).name
        settings = _param("predict") if predicts else _param("eval")
        train = _param("train") if trains else None
        model = None if trains or settings is None else parse("predict" if predicts else "eval", settings).model
        mlflow.set_tag(
            "mlflow.runName",
            run_name(
                "+".join(names),
                dataset=dataset,
                train=None if train is None else parse("train", train),
                model=model,
                run_id=run.info.run_id,
            ),
        )
        client = mlflow.MlflowClient()
        experiment = client.get_experiment(run.info.experiment_id)
        if experiment.tags.get("mlflow.experimentKind") != "custom_model_development":  # the UI's model-training view
            client.set_experiment_tag(experiment.experiment_id, "mlflow.experimentKind", "custom_model_development")

    @hook_impl(trylast=True)
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        import mlflow

        from acne_detection.framework.tracking import run_headline, ui_address

        _close_reopened_runs()
        if "ingestion_counts" in pipeline.all_outputs():  # the reconciliation, where a user reads last
            from acne_detection.core.ingestion import describe_counts

            logger.info(
                "%s (reasons: data/08_reporting/quarantine_report.csv)",
                describe_counts(catalog.load("ingestion_counts")),
            )
        run = mlflow.last_active_run()
        if run is None:
            logger.info(
                "Done. Outputs: data/05_model_input (YOLO dataset), data/06_models (weights), data/07_model_output "
                "(predictions), data/08_reporting (metrics, plots, reports). MLflow tracking was off."
            )
            return
        client = mlflow.MlflowClient()
        logged = client.get_run(run.info.run_id).data
        headline = run_headline(logged.metrics, logged.tags)
        client.set_tag(run.info.run_id, "mlflow.note.content", headline)  # the run's description in the UI
        uri = mlflow.get_tracking_uri()
        local = not uri.startswith(("http://", "https://"))
        logger.info(
            "Done: %s. Outputs: data/05_model_input (YOLO dataset), data/06_models (weights), "
            "data/07_model_output (predictions), data/08_reporting (metrics, plots, reports). MLflow run %s in %s. "
            "Browse it%s: %s",
            headline.replace("**", ""),
            run.info.run_id,
            uri,
            " with `make ui`, then open" if local else "",
            ui_address(uri, run.info.experiment_id, run.info.run_id),
        )

    @hook_impl(trylast=True)
    def on_pipeline_error(self, error: Exception, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        _close_reopened_runs(status="FAILED")
        # The cause in one line, above Kedro's traceback, where a user reads first.
        logger.error("The run stopped: %s", _root_cause(error))


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

    server = mlflow_conf.get("server", {})
    experiment = mlflow_conf.get("tracking", {}).get("experiment", {})
    name = experiment.get("name")
    if not name:
        return
    uri = _validate_uri(
        str(project_path), server.get("mlflow_tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI", "mlruns")
    )
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


def _root_cause(error: BaseException) -> str:
    """The innermost message of a chain of wrapped errors (Kedro wraps a dataset's own)."""
    while error.__cause__ is not None:
        error = error.__cause__
    return str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__


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
