"""The checks every run passes before its first node (``acne_detection.framework.checks``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from acne_detection.core.params import PARAMETER_GROUPS, parse
from acne_detection.framework.checks import (
    check_parameter_groups,
    check_tracking_server,
    ensure_experiment,
    open_store,
    set_client_retries,
    tracking_store_uri,
)


class RunChecks:
    """Before any node runs: MLflow's client has the project's retry settings, every parameter
    group is validated (a typo names itself), the tracking server answers, the store's schema
    exists (created by one run at a time), and the experiment exists with its artifact location."""

    @hook_impl(tryfirst=True)  # before kedro-mlflow, which would retry a dead server for minutes
    def after_context_created(self, context: Any) -> None:
        loader = context.config_loader
        if "mlflow" not in loader.config_patterns:  # kedro-mlflow's own patterns, registered when its hook runs
            loader.config_patterns.update({"mlflow": ["mlflow*", "mlflow*/**", "**/mlflow*"]})
        set_client_retries()  # before any request to a server, by this process or the ones it starts
        mlflow_conf = loader["mlflow"]
        check_tracking_server(mlflow_conf.get("server", {}).get("mlflow_tracking_uri"))
        params = context.config_loader["parameters"]  # as written: checked before Kedro validates the nodes' models
        check_parameter_groups(params, Path(context.project_path) / context.config_loader.conf_source)
        for group in PARAMETER_GROUPS:
            if group in params:
                parse(group, params[group])
        open_store(tracking_store_uri(mlflow_conf, Path(context.project_path)))  # before kedro-mlflow opens it
        ensure_experiment(mlflow_conf, Path(context.project_path))
