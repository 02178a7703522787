"""Hooks: settings that must hold for every run, and the closing message of a run."""

from __future__ import annotations

import logging
from typing import Any

from kedro.framework.hooks import hook_impl

from acne_detection.params import PARAMETER_GROUPS, parse

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


class RunReportHooks:
    """Validates every parameter group before any node runs, and closes a run by saying
    where its outputs are and how to look at them."""

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        params = context.params
        for group in PARAMETER_GROUPS:
            if group in params:
                parse(group, params[group])

    @hook_impl(trylast=True)
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        import mlflow

        _close_reopened_runs()
        if "ingestion_counts" in pipeline.all_outputs():  # the reconciliation, where a user reads last
            from acne_detection.pipelines.data.nodes import describe_counts

            logger.info("%s (reasons: data/08_reporting/quarantine_report.csv)",
                        describe_counts(catalog.load("ingestion_counts")))
        run = mlflow.last_active_run()
        run_line = f"MLflow run {run.info.run_id} in {mlflow.get_tracking_uri()}" if run else "MLflow tracking was off"
        logger.info(
            "Done. Outputs: data/05_model_input (YOLO dataset), data/06_models (weights), "
            "data/07_model_output (predictions), data/08_reporting (metrics, plots, reports). "
            "%s. Browse it with `make ui`, then open http://127.0.0.1:5000",
            run_line,
        )

    @hook_impl(trylast=True)
    def on_pipeline_error(self, error: Exception, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        _close_reopened_runs(status="FAILED")
