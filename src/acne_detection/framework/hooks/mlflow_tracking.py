"""kedro-mlflow's hook, registered by the project: typed parameters logged field by field, and
the run kedro-mlflow leaves open closed for good."""

from __future__ import annotations

from typing import Any

from kedro.framework.hooks import hook_impl
from kedro_mlflow.framework.hooks import MlflowHook


def close_reopened_runs(status: str = "FINISHED") -> None:
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
