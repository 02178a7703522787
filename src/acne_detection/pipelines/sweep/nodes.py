"""Nodes of the ``sweep`` pipeline: several training recipes on one split, chosen on validation.

Each recipe is a child MLflow run of the sweep's run, opened and closed inside ``run_sweep``
(kedro-mlflow reopens the parent before every node, so a child must not outlive the node), and
trains as a Ray Tune trial, as many at once as the cluster holds, or, without Ray, one after
another in this process (``runners.py``). A recipe's folder is named by a digest of everything
that shapes its result (settings, share of photos, dataset, rules): a finished recipe is not
trained again when the sweep is rerun, and an interrupted one resumes from its last epoch.
``budget_minutes`` bounds the estimated training time of one sweep run: a recipe whose estimate
does not fit in what is left is skipped and says so.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from acne_detection.core.params import (
    DistributedParams,
    EvalParams,
    GradingParams,
    SweepConfigParams,
    SweepParams,
    TrainParams,
)
from acne_detection.datasets import PretrainedWeights, YoloDataset
from acne_detection.framework.tracking import close_child_run, current_run_id, open_child_run
from acne_detection.pipelines.sweep.runners import TrialOutcome, run_recipes
from acne_detection.pipelines.sweep.trial import RecipeJob

logger = logging.getLogger(__name__)

REFERENCE_PX = 416  # training time is estimated per photo-epoch at this size, scaled by area


def recipe_settings(base: TrainParams, config: SweepConfigParams) -> TrainParams:
    """``train`` with one recipe's overrides (``augment`` keys merge into ``augment``).

    Raises:
        ValueError: an override is not a ``train`` setting, or has a wrong value, naming the recipe.
    """
    merged = base.model_dump()
    for key, value in config.train.items():
        if key == "augment" and isinstance(value, dict):
            merged["augment"] = {**merged["augment"], **value}
        else:
            merged[key] = value
    try:
        return TrainParams.model_validate(merged)
    except Exception as err:
        raise ValueError(f"sweep.configs '{config.name}': {err}") from err


def training_subset(
    dataset: YoloDataset, split_images: pd.DataFrame, fraction: float, seed: int, folder: Path
) -> YoloDataset:
    """The dataset with a share of its training *source photos* (all copies of a chosen source,
    none of the others); validation and test untouched. Shares are nested: the sources of 25 %
    are among those of 50 %, so a learning curve adds photos rather than swapping them.

    Args:
        dataset: the YOLO dataset.
        split_images: the split manifest (``image_id`` → ``group``, the source photo).
        fraction: the share of training sources kept (1: the dataset itself).
        seed: orders the sources.
        folder: where the subset's ``data.yaml`` and image list are written.

    Returns:
        A ``YoloDataset`` over the same files, its manifest and ``data.yaml`` the subset's.
    """
    if fraction >= 1:
        return dataset
    manifest = dataset.manifest
    train = manifest[manifest.split == "train"]
    groups = train.image_id.map(split_images.set_index("image_id")["group"]).fillna(train.image_id)
    order = np.random.default_rng(seed).permutation(sorted(groups.unique()))
    chosen = set(order[: max(1, round(fraction * len(order)))])
    kept = train[groups.isin(chosen)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.txt").write_text("".join(f"{dataset.root / rel}\n" for rel in kept.image))
    spec = yaml.safe_load(dataset.data_yaml.read_text())
    spec.update(path=str(dataset.root.resolve()), train=str((folder / "train.txt").resolve()))
    data_yaml = folder / "data.yaml"
    data_yaml.write_text(yaml.safe_dump(spec, sort_keys=False))
    subset = pd.concat([kept, manifest[manifest.split != "train"]], ignore_index=True)
    return YoloDataset(root=dataset.root, data_yaml=data_yaml, names=dataset.names, manifest=subset)


# The settings of eval and grading that the validation measurement uses (validation.py): only these
# enter a recipe's key, so a setting the sweep never reads (the gate, calibration, the count
# correction) does not make a finished recipe train again.
MEASURED_EVAL = {"min_conf", "nms_iou", "max_det", "iou_threshold", "operating_point"}
MEASURED_GRADING = {"thresholds", "names", "count_classes"}


def recipe_key(
    settings: TrainParams,
    train_fraction: float,
    manifest_sha256: str,
    checkpoint_every: int,
    eval_params: EvalParams,
    grading: GradingParams,
) -> str:
    """A digest of what shapes a recipe's result: its training settings (not where or how fast it
    runs), its share of the photos, the split, and the measurement's own settings."""
    parts = [
        settings.model_dump(mode="json", exclude={"device", "workers", "resume"}),
        train_fraction,
        manifest_sha256,
        checkpoint_every,
        eval_params.model_dump(mode="json", include=MEASURED_EVAL),
        grading.model_dump(mode="json", include=MEASURED_GRADING),
    ]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:10]


def _flat(prefix: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return {k: v for key, sub in value.items() for k, v in _flat(f"{prefix}.{key}", sub).items()}
    return {prefix: value}


@dataclass(frozen=True)
class _Recipe:
    """One recipe made ready to run: its settings, folder and share of the photos, and what it
    reports (its row of the results table, the params of its child run)."""

    name: str
    overrides: dict[str, Any]  # the recipe's own ``train`` settings, as written in ``sweep.configs``
    settings: TrainParams
    folder: Path
    subset: YoloDataset
    n_train: int
    area: float  # (imgsz / REFERENCE_PX)², the scale of its time per photo-epoch
    row: dict[str, Any]
    params: dict[str, Any]

    def minutes(self, seconds_per_photo: float) -> float:
        """Its estimated training time at ``seconds_per_photo`` per photo-epoch at ``REFERENCE_PX``."""
        return self.settings.epochs * self.n_train * self.area * seconds_per_photo / 60

    def seconds_per_photo(self, result: dict[str, Any]) -> float:
        """The time per photo-epoch at ``REFERENCE_PX`` its finished training (``result.json``) took."""
        return result["train_minutes"] * 60 / max(result["epochs_run"] * self.n_train * self.area, 1)


def _prepare_recipe(
    config: SweepConfigParams,
    dataset: YoloDataset,
    split_images: pd.DataFrame,
    *,
    workdir: Path,
    train: TrainParams,
    checkpoint_every: int,
    eval_params: EvalParams,
    grading: GradingParams,
) -> _Recipe:
    """A recipe's settings, its folder (named by ``recipe_key``) and its training subset."""
    settings = recipe_settings(train, config)
    key = recipe_key(settings, config.train_fraction, dataset.manifest_sha256(), checkpoint_every, eval_params, grading)
    folder = workdir / f"{config.name}-{key}"
    subset = training_subset(dataset, split_images, config.train_fraction, settings.seed, folder / "subset")
    n_train = int((subset.manifest.split == "train").sum())
    row: dict[str, Any] = {
        "recipe": config.name,
        "train_fraction": config.train_fraction,
        "train_photos": n_train,
        "imgsz": settings.imgsz,
        "epochs": settings.epochs,
        "freeze": settings.freeze,
        "optimizer": settings.optimizer,
        "lr0": settings.lr0,
        "mosaic": settings.augment.mosaic,
        "close_mosaic": settings.augment.close_mosaic,
        "overrides": json.dumps(config.train, sort_keys=True),
        "folder": str(folder),
    }
    params = {
        **_flat("train", settings.model_dump(mode="json")),
        "train_fraction": config.train_fraction,
        "train_photos": n_train,
    }
    area = (settings.imgsz / REFERENCE_PX) ** 2
    return _Recipe(config.name, config.train, settings, folder, subset, n_train, area, row, params)


def _open_recipe_run(parent: str | None, recipe: _Recipe, status: str) -> str | None:
    """The recipe's child run of the sweep's run (``None`` when the sweep is not tracked)."""
    tags = {"sweep.recipe": recipe.name, "sweep.status": status}
    return open_child_run(parent, run_name=f"sweep:{recipe.name}", params=recipe.params, tags=tags)


def _reuse_recipe(recipe: _Recipe, parent: str | None) -> dict[str, Any]:
    """The row of a recipe an earlier sweep run finished, logged again as a child run with its curve."""
    result = json.loads((recipe.folder / "result.json").read_text())
    child = _open_recipe_run(parent, recipe, "reused")
    history_file = recipe.folder / "history.csv"
    history = pd.read_csv(history_file) if history_file.exists() else None
    series = (  # its curve again, per epoch
        {"metrics/mAP50B": list(zip(history.epoch, history["metrics/mAP50(B)"], strict=True))}
        if history is not None and "metrics/mAP50(B)" in history
        else {}
    )
    close_child_run(child, metrics=result, status="FINISHED", series=series)
    return {**recipe.row, "status": "reused (trained by an earlier sweep run)", **result, "child_run_id": child}


def _recipe_job(recipe: _Recipe, run_id: str | None, shared: dict[str, Any]) -> RecipeJob:
    """What a trial needs to train and measure ``recipe``, logging into ``run_id``."""
    return RecipeJob(
        name=recipe.name,
        folder=recipe.folder,
        dataset=recipe.subset,
        settings=recipe.settings,
        run_id=run_id,
        **shared,
    )


def _trained_row(recipe: _Recipe, child: str | None, outcome: TrialOutcome) -> dict[str, Any]:
    """A trained recipe's row, its child run closed with its metrics and the node it ran on."""
    tags = {"sweep.node_id": outcome.node_id} if outcome.node_id else {}
    where = {"child_run_id": child, "node_id": outcome.node_id}
    if outcome.result is None:
        reason = f"failed: {outcome.error} (its log is above)"
        logger.error("Sweep recipe '%s' %s", recipe.name, reason)
        close_child_run(child, metrics={}, status="FAILED", tags=tags)
        return {**recipe.row, "status": reason, **where}
    close_child_run(child, metrics=outcome.result, status="FINISHED", tags=tags)
    return {**recipe.row, "status": "trained", **outcome.result, **where}


def _network(recipe: _Recipe) -> tuple[str, Any]:
    """What sets a recipe's cost per photo-epoch beyond its image size: the network, and how much of
    it trains (on the ACNE04 dev slice, ``yolov8n-p2`` took 2.9x ``yolov8n``'s time an epoch,
    ``yolov8s`` 2.3x and an unfrozen backbone 1.4x)."""
    return recipe.settings.architecture, recipe.settings.freeze


def _measured_rates(recipes: list[_Recipe]) -> dict[tuple[str, Any], list[float]]:
    """Seconds per photo-epoch at ``REFERENCE_PX`` that the recipes an earlier sweep run finished
    took, by network (``_network``); each ``result.json`` read once."""
    rates: dict[tuple[str, Any], list[float]] = {}
    for recipe in recipes:
        if (recipe.folder / "result.json").exists():
            result = json.loads((recipe.folder / "result.json").read_text())
            rates.setdefault(_network(recipe), []).append(recipe.seconds_per_photo(result))
    return rates


def _rate(rates: dict[tuple[str, Any], list[float]], recipe: _Recipe, first_guess: float) -> float:
    """A recipe's seconds per photo-epoch: the median of the finished recipes of its network where
    any finished, else of all finished, else ``first_guess`` (``sweep.seconds_per_photo``)."""
    measured = rates.get(_network(recipe)) or [r for same in rates.values() for r in same]
    return float(np.median(measured)) if measured else first_guess


def _plan(recipes: list[_Recipe], sweep: SweepParams) -> tuple[list[_Recipe], list[_Recipe], dict[str, dict[str, Any]]]:
    """Which recipes are reused, which trained, which skipped (their rows), in ``sweep.configs``
    order: a recipe is trained while the estimated minutes of those before it leave room for
    its own. The plan is made before any trial starts, as trials may all run at once."""
    rates = _measured_rates(recipes)
    reused, trained, skipped, planned = [], [], {}, 0.0
    for recipe in recipes:
        estimate = recipe.minutes(_rate(rates, recipe, sweep.seconds_per_photo))
        if (recipe.folder / "result.json").exists():
            reused.append(recipe)
        elif planned + estimate > sweep.budget_minutes:
            reason = f"skipped: needs ~{estimate:.0f} min, {sweep.budget_minutes - planned:.0f} min of the budget left"
            logger.warning("Sweep recipe '%s' %s", recipe.name, reason)
            skipped[recipe.name] = {**recipe.row, "status": reason, "estimated_minutes": estimate}
        else:
            planned += estimate
            trained.append(recipe)
            logger.info(
                "Sweep recipe '%s' (%d training photos, ~%.0f min): %s",
                recipe.name,
                recipe.n_train,
                estimate,
                recipe.overrides,
            )
    return reused, trained, skipped


def run_sweep(
    dataset: YoloDataset,
    pretrained: PretrainedWeights,
    ground_truth: pd.DataFrame,
    split_images: pd.DataFrame,
    sweep: SweepParams,
    train: TrainParams,
    eval_params: EvalParams,
    grading: GradingParams,
    distributed: DistributedParams = DistributedParams(),  # frozen: one shared default is safe
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train the recipes of ``sweep.configs`` that the budget holds, as Ray Tune trials (or one
    after another in this process, without Ray), and measure each on the validation split.

    Args:
        dataset: the YOLO dataset (one split for every recipe).
        pretrained: the pretrained checkpoints (each recipe starts from its architecture's).
        ground_truth: the true boxes of every split (validation's are used).
        split_images: the split manifest (true grades; source photos for the shares).
        sweep: the ``sweep`` parameters.
        train: the ``train`` parameters each recipe overrides.
        eval_params: the operating point's rule, IoU and confidence floor (as eval measures).
        grading: the grading rule.
        distributed: where Ray runs (``address``: a cluster; ``None``: ``RAY_ADDRESS``, else a
            local instance).

    Returns:
        One row per recipe, in ``sweep.configs`` order (``status``: trained, reused, skipped or
        failed, with the reason; its settings and validation metrics; ``child_run_id``; the Ray
        ``node_id`` it trained on), and the learning curves: per recipe and epoch, Ultralytics'
        validation mAP@50 and, at the kept checkpoints, the project's validation mAP@50 and
        grading accuracy.
    """
    parent = current_run_id()
    workdir = Path(sweep.workdir).resolve()  # Ultralytics puts a relative project under its own runs/
    recipes = [
        _prepare_recipe(
            config,
            dataset,
            split_images,
            workdir=workdir,
            train=train,
            checkpoint_every=sweep.checkpoint_every,
            eval_params=eval_params,
            grading=grading,
        )
        for config in sweep.configs
    ]
    reused, trained, rows = _plan(recipes, sweep)
    rows |= {recipe.name: _reuse_recipe(recipe, parent) for recipe in reused}
    shared = {
        "pretrained": pretrained,
        "eval_params": eval_params,
        "grading": grading,
        "val_truth": ground_truth[ground_truth.split == "val"],
        "true_grades": split_images.set_index("image_id")["grade"],
        "sources": split_images.set_index("image_id")["group"] if "group" in split_images else None,
        "checkpoint_every": sweep.checkpoint_every,
    }
    children = {recipe.name: _open_recipe_run(parent, recipe, "trained") for recipe in trained}
    jobs = [_recipe_job(recipe, children[recipe.name], shared) for recipe in trained]
    outcomes = run_recipes(jobs, sweep.resources, use_ray=sweep.use_ray, address=distributed.address)
    rows |= {recipe.name: _trained_row(recipe, children[recipe.name], outcomes[recipe.name]) for recipe in trained}
    ok = {recipe.name for recipe in reused} | {name for name, outcome in outcomes.items() if outcome.result is not None}
    curves = [_curves(recipe.name, recipe.folder) for recipe in recipes if recipe.name in ok]
    table = pd.DataFrame([rows[recipe.name] for recipe in recipes])
    # no recipe trained (every one failed, or was skipped): an empty table that still has its columns, so
    # that the saved CSV loads back and the figure and report say so, rather than the catalog failing on it
    return table, (pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(columns=list(CURVE_COLUMNS)))


CURVE_COLUMNS = ("recipe", "epoch", "ultralytics_val_mAP50", "val_mAP50", "val_grade_accuracy")


def _curves(name: str, folder: Path) -> pd.DataFrame:
    """A recipe's learning curve against epochs: Ultralytics' per-epoch validation mAP@50 and
    the project's checkpoint measurements (mAP@50, grading accuracy) at their epochs."""
    parts = []
    if (folder / "history.csv").exists():
        history = pd.read_csv(folder / "history.csv")
        parts.append(pd.DataFrame({"epoch": history.epoch, "ultralytics_val_mAP50": history["metrics/mAP50(B)"]}))
    if (folder / "checkpoints.csv").exists() and (folder / "checkpoints.csv").stat().st_size > 1:
        checkpoints = pd.read_csv(folder / "checkpoints.csv")
        parts.append(checkpoints[["epoch", "val_mAP50", *(c for c in ("val_grade_accuracy",) if c in checkpoints)]])
    if not parts:
        return pd.DataFrame()
    curve = parts[0]
    for part in parts[1:]:
        curve = curve.merge(part, on="epoch", how="outer")
    return curve.assign(recipe=name)[["recipe", *curve.columns]]


def choose_recipe(results: pd.DataFrame, sweep: SweepParams, train: TrainParams) -> tuple[dict[str, Any], str]:
    """The recipe of best validation score among those trained on all training photos.

    Args:
        results: ``run_sweep``'s table.
        sweep: the ``sweep`` parameters (``select``: the validation metric; ties go to the
            faster recipe; ``full_export_train_photos``: where the learning curve is extrapolated).
        train: the ``train`` parameters the recipes override.

    Returns:
        The chosen ``train`` block (for ``conf/<env>/parameters_train.yml``) and the sweep's
        report in Markdown: the comparison table, the choice and its margin, and the learning
        curve against training photos with its extrapolation.
    """
    done = results[results.val_mAP50.notna()] if "val_mAP50" in results else results.iloc[:0]
    full = done[done.train_fraction >= 1]
    lines = [
        "# Training recipe sweep",
        "",
        f"Chosen on the **validation** split only, by `{sweep.select}` (ties: the faster recipe); the test split "
        "is reported once, by `eval`, for the chosen recipe.",
        "",
    ]
    columns = [
        c
        for c in (
            "recipe",
            "status",
            "train_photos",
            "imgsz",
            "epochs",
            "freeze",
            "optimizer",
            "train_minutes",
            "val_mAP50",
            "val_mAP50-95",
            "val_recall",
            "val_precision",
            "val_threshold",
            "val_grade_accuracy",
            "val_grade_accuracy_low",
            "val_grade_accuracy_high",
            "val_grade_ceiling",
            "val_count_mae",
            "val_pred_per_photo",
            "val_true_per_photo",
        )
        if c in results
    ]
    lines += [_markdown_table(results[columns]), ""]
    if not len(full):
        lines.append("No recipe trained on all training photos finished: nothing is chosen.")
        return {}, "\n".join(lines) + "\n"
    ranked = full.assign(_minutes=full.get("train_minutes", 0)).sort_values(
        [sweep.select, "_minutes"], ascending=[False, True]
    )
    best = ranked.iloc[0]
    overrides = json.loads(best.overrides)
    chosen = recipe_settings(train, SweepConfigParams(name=best.recipe, train=overrides))
    lines.append(f"**Chosen: `{best.recipe}`** ({sweep.select} {best[sweep.select]:.3f}).")
    if len(ranked) > 1:
        second = ranked.iloc[1]
        half = (best.get("val_grade_accuracy_high", np.nan) - best.get("val_grade_accuracy_low", np.nan)) / 2
        lines.append(
            f"Next: `{second.recipe}` ({second[sweep.select]:.3f}). On {int(best.val_photos)} validation photos the "
            f"chosen recipe's grading accuracy is known to about ±{half:.2f} (95 % interval): smaller differences "
            "between recipes are within chance."
        )
    lines += ["", *_learning_curve_text(done, sweep.full_export_train_photos)]
    block = {"train": chosen.model_dump(mode="json")}
    return block, "\n".join(lines) + "\n"


def recipe_label(overrides: str) -> str:
    """How a recipe's overrides (``sweep_results.overrides``, JSON) are named in the report and figure."""
    return "the base recipe" if overrides in ("{}", "") else f"recipe settings {overrides}"


def _learning_curve_text(done: pd.DataFrame, full_export: int) -> list[str]:
    """The learning curve against training photos, and a log-linear extrapolation of it."""
    groups = done.groupby("overrides")
    for overrides, group in groups:
        if group.train_fraction.nunique() < 3:  # a line through two points says nothing of the trend
            continue
        group = group.sort_values("train_photos")
        lines = [
            f"Learning curve against training photos ({recipe_label(overrides)}):",
            "",
            _markdown_table(group[["recipe", "train_photos", "val_mAP50", "val_grade_accuracy"]]),
            "",
        ]
        slope, intercept = np.polyfit(np.log(group.train_photos), group.val_mAP50, 1)
        guess = intercept + slope * np.log(full_export)
        lines.append(
            f"A straight line in log(photos) through these {len(group)} points gains {slope * np.log(2):+.3f} "
            f"validation mAP@50 per doubling of the training photos and reaches {guess:.3f} at {full_export} "
            "training photos (the full export). That is a trend from a few points, not a measurement: "
            "curves of this kind bend down as they saturate, so read it as an upper guess."
        )
        return lines
    return ["No recipe was trained on three or more shares of the photos: no extrapolation against photos."]


def _markdown_table(table: pd.DataFrame) -> str:
    def cell(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) and np.isfinite(v) else ("" if isinstance(v, float) else str(v))

    head = "| " + " | ".join(table.columns) + " |\n|" + "---|" * len(table.columns)
    return head + "".join("\n| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False))


def recipe_yaml(block: dict[str, Any]) -> str:
    """The chosen ``train`` block as YAML, ready for ``conf/<env>/parameters_train.yml``."""
    return "# chosen by `kedro run --pipeline sweep` on the validation split\n" + yaml.safe_dump(block, sort_keys=False)
