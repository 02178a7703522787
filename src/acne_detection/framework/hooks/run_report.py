"""A run's name in MLflow, and what a user reads when it ends: where its outputs are, or why it stopped."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from acne_detection.core.params import parse
from acne_detection.framework.hooks.mlflow_tracking import close_reopened_runs

logger = logging.getLogger(__name__)


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

        close_reopened_runs()
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
        # The cause in one line, above Kedro's traceback, where a user reads first: logged before the
        # run is closed, which may itself fail when the tracking server is what went away.
        logger.error("The run stopped: %s", root_cause(error))
        close_reopened_runs(status="FAILED")


def root_cause(error: BaseException) -> str:
    """The innermost message of a chain of wrapped errors (Kedro wraps a dataset's own), followed
    by the notes added to any of them (``RunFailure``'s explanation of a full disk)."""
    notes = []
    while True:
        notes += getattr(error, "__notes__", [])
        if error.__cause__ is None:
            break
        error = error.__cause__
    message = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
    return " ".join([message, *notes])
