"""Where a sweep's recipes train: as Ray Tune trials, as many at once as the cluster's free
resources hold (the ``ray`` extra; a local instance, or the cluster ``RAY_ADDRESS`` names), or,
without Ray, one after another in this process.

A trial reaches the tracking store the sweep's run uses through ``MLFLOW_TRACKING_URI`` (a
local SQLite store's path made absolute) and the MLflow credentials, handed to the trials'
processes as Ray ``runtime_env`` variables (``framework.distributed.ray_session``); they are
never logged. A trial reads the dataset and writes its recipe's folder by the paths the node
gave it: on a cluster of several machines the project folder is at the same path on every node
(a shared file system).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from typing import Any

from acne_detection.core.params import SweepResourcesParams
from acne_detection.framework.distributed import node_id, ray_installed, ray_session
from acne_detection.framework.tracking import portable_tracking_uri
from acne_detection.pipelines.sweep.trial import RecipeJob, train_recipe

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrialOutcome:
    """How one recipe's training ended: its result (``None`` when it failed), why it failed,
    and the Ray node it ran on (``None`` in this process, or when unknown)."""

    result: dict[str, Any] | None
    error: str | None = None
    node_id: str | None = None


def run_recipes(
    jobs: list[RecipeJob], resources: SweepResourcesParams, *, use_ray: bool, address: str | None = None
) -> dict[str, TrialOutcome]:
    """Train and measure every recipe: on Ray when it is installed and ``use_ray``, else here
    one after another.

    Args:
        jobs: the recipes to train (their child runs already open).
        resources: what one trial holds on Ray (CPUs, GPUs).
        use_ray: ``sweep.use_ray``.
        address: ``distributed.address``, the cluster to join (``None``: ``RAY_ADDRESS``, else a
            local instance).

    Returns:
        Recipe name to its outcome; a recipe that fails does not stop the others.
    """
    if not jobs:
        return {}
    if use_ray and ray_installed():
        return _on_ray(jobs, resources, address)
    why = "sweep.use_ray is false" if not use_ray else "Ray (the `ray` extra) is not installed"
    logger.info("The sweep's recipes train one after another in this process (%s)", why)
    return {job.name: _in_process(job) for job in jobs}


def _in_process(job: RecipeJob) -> TrialOutcome:
    """One recipe trained in this process; an error becomes its outcome (the sweep goes on)."""
    try:
        return TrialOutcome(train_recipe(job))
    except Exception as err:  # any failure of one recipe is reported in its row, as on Ray
        logger.exception("Sweep recipe '%s' failed", job.name)
        return TrialOutcome(None, f"{type(err).__name__}: {err}")
    finally:  # the next recipe starts without this one's model and data loaders in memory
        gc.collect()
        _empty_cuda_cache()


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _tune_trial(config: dict[str, str], *, jobs: dict[str, RecipeJob], cwd: str) -> None:
    """A Ray Tune trial: the recipe ``config`` names, reported with the node it ran on (first on
    its start, so that a failed trial's node is known too)."""
    from ray import tune

    node = {"node_id": node_id()}
    try:
        os.chdir(cwd)  # Tune starts a trial in its own folder; the catalog's paths are the project's
    except OSError as err:
        raise FileNotFoundError(
            f"node {node['node_id']}: the project folder {cwd} is not here ({err}); a sweep's trials need the "
            "project at the same path on every node, on a shared file system (docs/scaling-out.md)"
        ) from err
    tune.report(node)
    result = train_recipe(jobs[config["recipe"]])
    tune.report({**node, "recipe_result": json.dumps(result)})  # one key: Tune adds its own beside it


def _on_ray(jobs: list[RecipeJob], resources: SweepResourcesParams, address: str | None) -> dict[str, TrialOutcome]:
    """Every recipe a Ray Tune trial with ``resources``; Tune runs as many at once as fit."""
    import ray
    from ray import tune

    uri = {"MLFLOW_TRACKING_URI": portable_tracking_uri()}
    with ray_session(address, env_vars=uri), tempfile.TemporaryDirectory(prefix="sweep-tune-") as storage:
        gpus = resources.gpus if resources.gpus is not None else min(ray.cluster_resources().get("GPU", 0), 1)
        trainable = tune.with_resources(
            tune.with_parameters(_tune_trial, jobs={job.name: job for job in jobs}, cwd=os.getcwd()),
            {"cpu": resources.cpus, "gpu": gpus},
        )
        logger.info(
            "Sweep on Ray: %d recipes, each %g CPU and %g GPU, on %s",
            len(jobs),
            resources.cpus,
            gpus,
            {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")},
        )
        tuner = tune.Tuner(
            trainable,
            param_space={"recipe": tune.grid_search([job.name for job in jobs])},
            tune_config=tune.TuneConfig(trial_dirname_creator=lambda trial: trial.config["recipe"]),
            run_config=tune.RunConfig(name="sweep", storage_path=storage, verbose=0),
        )
        return {result.config["recipe"]: _outcome(result) for result in tuner.fit()}


def _outcome(result: Any) -> TrialOutcome:
    """A Tune ``Result`` as the sweep reads it: the recipe's result from the last report, or the
    trial's error, and the node it ran on."""
    metrics = result.metrics or {}
    node = metrics.get("node_id")
    if result.error is None and "recipe_result" not in metrics:
        return TrialOutcome(None, "the trial ended without reporting a result", node)
    if result.error is not None:
        cause = getattr(result.error, "cause", None) or result.error
        return TrialOutcome(None, f"{type(cause).__name__}: {cause}", node)
    return TrialOutcome(json.loads(metrics["recipe_result"]), None, node)
