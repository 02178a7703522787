"""Nodes of the ``sweep`` pipeline: several training recipes on one split, chosen on validation.

Each recipe trains in its own process (``worker.py``) as a child MLflow run of the sweep's
run, opened and closed inside ``run_sweep`` (kedro-mlflow reopens the parent before every
node, so a child must not outlive the node). A recipe's folder is named by a digest of
everything that shapes its result (settings, share of photos, dataset, rules): a finished
recipe is not trained again when the sweep is rerun, and an interrupted one resumes from its
last epoch. ``budget_minutes`` bounds the training time of one sweep run: a recipe whose
estimated time does not fit in what is left is skipped and says so.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import yaml

from acne_detection.core.params import EvalParams, GradingParams, SweepConfigParams, SweepParams, TrainParams
from acne_detection.datasets import PretrainedWeights, YoloDataset

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


def _open_child(parent: str | None, name: str, params: dict[str, Any], tags: dict[str, str]) -> str | None:
    """A child run of the sweep's run (``None`` when the sweep is not tracked)."""
    if not parent:
        return None
    client = mlflow.tracking.MlflowClient()
    experiment = client.get_run(parent).info.experiment_id
    child = client.create_run(
        experiment, run_name=f"sweep:{name}", tags={"mlflow.parentRunId": parent, "sweep.recipe": name, **tags}
    )
    items = list(params.items())
    for start in range(0, len(items), 90):  # MLflow takes 100 params a batch at most
        client.log_batch(
            child.info.run_id,
            params=[mlflow.entities.Param(k, str(v)[:500]) for k, v in items[start : start + 90]],
        )
    return child.info.run_id


def _close_child(run_id: str | None, metrics: dict[str, float], history: pd.DataFrame | None, status: str) -> None:
    if not run_id:
        return
    client = mlflow.tracking.MlflowClient()
    stamp = int(time.time() * 1000)
    batch = [mlflow.entities.Metric(k, float(v), stamp, 0) for k, v in metrics.items() if isinstance(v, int | float)]
    if history is not None and "metrics/mAP50(B)" in history:  # a reused result: its curve again, per epoch
        for epoch, value in zip(history.epoch, history["metrics/mAP50(B)"], strict=True):
            batch.append(mlflow.entities.Metric("metrics/mAP50B", float(value), stamp, int(epoch)))
    batch = [m for m in batch if np.isfinite(m.value)]
    for start in range(0, len(batch), 900):
        client.log_batch(run_id, metrics=batch[start : start + 900])
    client.set_terminated(run_id, status)


def run_sweep(
    dataset: YoloDataset,
    pretrained: PretrainedWeights,
    ground_truth: pd.DataFrame,
    split_images: pd.DataFrame,
    sweep: SweepParams,
    train: TrainParams,
    eval_params: EvalParams,
    grading: GradingParams,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train each recipe of ``sweep.configs`` in order, while the budget lasts, and measure each
    on the validation split.

    Args:
        dataset: the YOLO dataset (one split for every recipe).
        pretrained: the COCO checkpoint every recipe starts from.
        ground_truth: the true boxes of every split (validation's are used).
        split_images: the split manifest (true grades; source photos for the shares).
        sweep: the ``sweep`` parameters.
        train: the ``train`` parameters each recipe overrides.
        eval_params: the operating point's rule, IoU and confidence floor (as eval measures).
        grading: the grading rule.

    Returns:
        One row per recipe (``status``: trained, reused, skipped or failed, with the reason;
        its settings and validation metrics; ``child_run_id``), and the learning curves: per
        recipe and epoch, Ultralytics' validation mAP@50 and, at the kept checkpoints, the
        project's validation mAP@50 and grading accuracy.
    """
    parent = mlflow.active_run().info.run_id if mlflow.active_run() else None
    workdir = Path(sweep.workdir).resolve()  # Ultralytics puts a relative project under its own runs/
    val_truth = ground_truth[ground_truth.split == "val"]
    true_grades = split_images.set_index("image_id")["grade"]
    seconds_per_photo, spent, rows, curves = sweep.seconds_per_photo, 0.0, [], []
    for config in sweep.configs:
        settings = recipe_settings(train, config)
        key = recipe_key(
            settings, config.train_fraction, dataset.manifest_sha256(), sweep.checkpoint_every, eval_params, grading
        )
        folder = workdir / f"{config.name}-{key}"
        subset = training_subset(dataset, split_images, config.train_fraction, settings.seed, folder / "subset")
        n_train = int((subset.manifest.split == "train").sum())
        area = (settings.imgsz / REFERENCE_PX) ** 2
        estimate = settings.epochs * n_train * area * seconds_per_photo / 60
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
        result_file = folder / "result.json"
        if result_file.exists():
            result = json.loads(result_file.read_text())
            child = _open_child(parent, config.name, params, {"sweep.status": "reused"})
            history = pd.read_csv(folder / "history.csv") if (folder / "history.csv").exists() else None
            _close_child(child, result, history, "FINISHED")
            rows.append({**row, "status": "reused (trained by an earlier sweep run)", **result, "child_run_id": child})
        elif spent + estimate > sweep.budget_minutes:
            reason = f"skipped: needs ~{estimate:.0f} min, {sweep.budget_minutes - spent:.0f} min of the budget left"
            logger.warning("Sweep recipe '%s' %s", config.name, reason)
            rows.append({**row, "status": reason, "estimated_minutes": estimate})
            continue
        else:
            logger.info(
                "Sweep recipe '%s' (%d training photos, ~%.0f min): %s", config.name, n_train, estimate, config.train
            )
            child = _open_child(parent, config.name, params, {"sweep.status": "trained"})
            job = {
                "folder": str(folder),
                "dataset": subset,
                "pretrained": pretrained,
                "train": settings,
                "eval": eval_params,
                "grading": grading,
                "val_truth": val_truth,
                "true_grades": true_grades,
                "checkpoint_every": sweep.checkpoint_every,
                "run_id": child,
                "tracking_uri": mlflow.get_tracking_uri() if child else None,
            }
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "job.pkl").write_bytes(pickle.dumps(job))
            started = time.monotonic()
            done = subprocess.run(
                [sys.executable, "-m", "acne_detection.pipelines.sweep.worker", str(folder / "job.pkl")],
                env={**os.environ, "PYTHONPATH": os.pathsep.join([p for p in sys.path if p])},
                check=False,
            )
            spent += (time.monotonic() - started) / 60
            if done.returncode != 0 or not result_file.exists():
                reason = f"failed: the worker exited with {done.returncode} (its log is above)"
                logger.error("Sweep recipe '%s' %s", config.name, reason)
                _close_child(child, {}, None, "FAILED")
                rows.append({**row, "status": reason})
                continue
            result = json.loads(result_file.read_text())
            _close_child(child, result, None, "FINISHED")
            rows.append({**row, "status": "trained", **result, "child_run_id": child})
            seconds_per_photo = result["train_minutes"] * 60 / max(result["epochs_run"] * n_train * area, 1)
        curves.append(_curves(config.name, folder))
    results = pd.DataFrame(rows)
    return results, (pd.concat(curves, ignore_index=True) if curves else pd.DataFrame())


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
