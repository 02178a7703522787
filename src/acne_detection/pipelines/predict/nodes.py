"""Nodes of the ``predict`` pipeline: new photos → lesions → counts and grade per photo →
annotated copies and an HTML report a clinician can scroll.

Prediction goes through the deployed model's ``acne_detection.model.predictor.Predictor``, the
one the served model uses, on the model record eval (or the registry) keeps for these weights.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from kedro.io import DatasetError

from acne_detection.core.accelerator import detect_device
from acne_detection.core.files import progress_bar, sha256_of
from acne_detection.core.grade_classifier import SCORE_PREFIX
from acne_detection.core.grading import GradingRule
from acne_detection.core.image_check import probe_image
from acne_detection.core.inference import PREDICTION_COLUMNS, needs_slicing
from acne_detection.core.params import BatchPredictParams, DistributedParams, GradingParams, PredictParams
from acne_detection.datasets import ModelRecords
from acne_detection.datasets.photo_folder import Photos
from acne_detection.datasets.weights import grade_classifier_checkpoint
from acne_detection.framework.distributed import cluster_address, ray_installed, ray_session
from acne_detection.framework.tracking import resolve_model
from acne_detection.model.batch import (
    ModelFiles,
    PartsFolder,
    PhotoJob,
    boxes_of,
    predict_in_process,
    predict_on_ray,
)
from acne_detection.model.predictor import ModelChoice, Predictor, grade_photos
from acne_detection.model.record import ModelRecord

logger = logging.getLogger(__name__)
PHOTO_COLUMNS = ["photo", "status", "reason", "detail", "width", "height", "sliced"]
_ONE_PROCESS = DistributedParams(predict=BatchPredictParams(engine="local", parts=None))  # nothing kept


def choose_model(
    weights: Path,
    records: ModelRecords,
    params: PredictParams,
    grading: GradingParams,
    grade_classifier: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The model to predict with, its record, and the confidence threshold chosen *for that model*.

    The record is eval's, if it evaluated this very checkpoint (same SHA-256), else the
    registered version's (``models:/``, or the versions registered with these weights), else a
    default one. The threshold comes, in order, from ``predict.threshold`` when set; the
    record's operating point; else ``default_threshold``, with a warning. Never another
    model's threshold. A record made under another grading rule than ``grading``'s is refused
    here, naming both rules, before any photo is predicted.

    Args:
        weights: the checkpoint ``train`` saved.
        records: the ``model_record`` dataset (eval's record and the registry's).
        params: the ``predict`` parameters.
        grading: the ``grading`` parameters.
        grade_classifier: ``train_grade_classifier``'s record (where the last trained classifier is).

    Returns:
        A ``ModelChoice`` as JSON (what ``prediction_model`` saves).

    Raises:
        GradeRuleMismatch: the record was made under another grading rule.
    """
    checkpoint, source = resolve_model(params.model, Path(weights))
    sha = sha256_of(checkpoint)
    asked = GradingRule.from_params(grading)
    record, version = records.for_model(params.model, sha, asked)
    record = record or ModelRecord.default(sha, asked, model_source=source)
    grade_model = record.grader(asked)  # refused now, before any photo is predicted
    if params.threshold is not None:
        threshold, origin = params.threshold, "predict.threshold"
    elif record.has_operating_point:
        threshold = record.threshold
        origin = (
            f"eval's operating point ({record.threshold_rule})" if record == records.local else f"registered {version}"
        )
    else:
        threshold, origin = params.default_threshold, "predict.default_threshold"
        logger.warning(
            "No operating point recorded for %s (eval has not evaluated this model): using "
            "predict.default_threshold %.2f. Run `kedro run --pipeline eval` with the same model to get one.",
            source,
            threshold,
        )
    choice = ModelChoice(
        checkpoint=str(checkpoint),
        source=source,
        model_version=version or source,
        threshold=threshold,
        threshold_source=origin,
        grade_classifier=_find_classifier(record.grade_model, checkpoint, grade_classifier or {}),
        record=record,
    )
    logger.info(
        "Predicting with %s at confidence >= %.2f (%s), graded by %s", source, threshold, origin, grade_model.describe()
    )
    for warning in record.warnings():
        logger.warning("%s: %s", choice.model_version, warning)
    return choice.model_dump(mode="json")


def _find_classifier(grade_model: dict[str, Any], checkpoint: Path, record: dict[str, Any]) -> str:
    """The grade classifier's checkpoint the grade model reads (by its SHA-256): the last trained
    one, or one registered beside the weights (``models:/``); ``""`` when it reads none.

    Raises:
        DatasetError: the grade model reads a classifier that is nowhere here.
    """
    places = [Path(record["weights"])] if record.get("weights") else []
    try:
        found = grade_classifier_checkpoint(grade_model, [*places, *sorted(checkpoint.parent.glob("*.pt"))])
    except FileNotFoundError as err:
        raise DatasetError(
            f"{err}: predict with the registered version (predict.model: "
            "models:/acne-detector/<version>), or run `kedro run` to train both again"
        ) from None
    return str(found) if found else ""


def predict_new_photos(
    photos: Photos,
    model_info: dict[str, Any],
    params: PredictParams,
    distributed: DistributedParams = _ONE_PROCESS,  # frozen: one shared default is safe
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Check every file, predict every good photo (in batches, sliced when large) with the
    deployed model's ``Predictor``: in this process, or on Ray's actors (``model.batch``).

    Finished batches are kept (``distributed.predict.parts``): a run stopped midway predicts only
    the photos no kept batch holds. Ray is used from ``distributed.predict.min_photos`` photos
    on (``engine: auto``), on the cluster ``distributed.address`` or ``RAY_ADDRESS`` names, else
    on a local instance; ``engine`` forces one process (``local``) or Ray (``ray``).

    Args:
        photos: the folder's files (``PhotoFolder``).
        model_info: ``choose_model``'s result.
        params: the ``predict`` parameters.
        distributed: the ``distributed`` parameters (default: one process, nothing kept).

    Returns:
        The lesions counted (``inference.PREDICTION_COLUMNS``, ``image`` the photo's path in the
        folder, boxes in its own pixels as displayed, calibrated ``confidence`` at or above the
        threshold), and one row per file that is or looks like a photo: ``status``
        ``predicted`` or ``skipped`` with ``reason`` and ``detail``, size, ``sliced``, ``node``
        (the Ray node that predicted it; empty in one process) and, for a predicted photo,
        ``candidates`` (its detections down to the calibration's floor: what its grade
        probabilities come from) and the grade classifier's scores where the grade model reads
        them. A photo that fails is ``skipped`` with reason ``prediction failed``. Annotation
        files beside the photos are not listed (the log counts them).
    """
    choice = ModelChoice.model_validate(model_info)
    device, device_name = detect_device(params.device)
    predictor = Predictor.load(
        choice.record,
        Path(choice.checkpoint),
        params,
        threshold=choice.threshold,
        device=device,
        classifier=choice.grade_classifier or None,
    )
    rows, good = _check_files(photos)
    logger.info(
        "Predicting %d photos on %s (%s, %s) at %d px, slicing %s; %d files skipped",
        len(good),
        device,
        device_name,
        predictor.runtime,
        predictor.settings.imgsz,
        predictor.settings.slicing,
        len(rows),
    )
    jobs = [PhotoJob.of(f.relative_to(photos.root).as_posix(), f) for f, _ in good]
    done = _predict_photos(predictor, choice, jobs, params, distributed)
    lesions, scores = [], {}
    for (f, probe), job in zip(good, jobs, strict=True):
        row, (w, h) = done[job.key], (int(probe["width"]), int(probe["height"]))
        if row["error"]:
            rows.append(_photo_row(photos.root, f, "prediction failed", row["error"]))
            continue
        lesions.append(boxes_of(row, "counted"))
        scores[job.key] = json.loads(row["scores"])
        rows.append(
            {
                **_photo_row(photos.root, f, "", ""),
                "status": "predicted",
                "width": w,
                "height": h,
                "sliced": needs_slicing(w, h, predictor.settings),
                "node": row["node"],
                "candidates": boxes_of(row, "candidates"),
            }
        )
    table = pd.DataFrame(rows, columns=[*PHOTO_COLUMNS, "node", "candidates"]).sort_values("photo", ignore_index=True)
    table["node"] = table["node"].fillna("")
    if any(s is not None for s in scores.values()):  # the grade model's second signal, scored on the same photos
        table = table.join(pd.DataFrame.from_dict(scores, orient="index").rename_axis("image"), on="photo")
    found = pd.concat(lesions, ignore_index=True) if lesions else pd.DataFrame(columns=PREDICTION_COLUMNS)
    return found[PREDICTION_COLUMNS], table


def _predict_photos(
    predictor: Predictor,
    choice: ModelChoice,
    jobs: list[PhotoJob],
    params: PredictParams,
    distributed: DistributedParams,
) -> dict[str, dict[str, Any]]:
    """Every photo's row (``model.batch.predict_batch``), by key: from the kept batches, then
    from this process or Ray, each new batch kept as it finishes."""
    settings = distributed.predict
    parts = None
    if settings.parts:
        fingerprint = {
            "record": choice.record.to_json(),
            "threshold": choice.threshold,
            "predict": params.model_dump(mode="json", exclude={"annotated_max_side", "report_thumb_side", "device"}),
            "runtime": predictor.runtime,
            "imgsz": predictor.settings.imgsz,
        }
        parts = PartsFolder(settings.parts, fingerprint)
    done = parts.finished(jobs) if parts else {}
    if done:
        logger.info("Resuming: %d of %d photos were predicted by an earlier run (%s)", len(done), len(jobs), parts.path)
    todo = [job for job in jobs if job.key not in done]
    engine = _engine(settings, len(todo), distributed.address)
    with progress_bar() as bar:
        task = bar.add_task(f"Predicting {len(todo)} photos" + (" on Ray" if engine == "ray" else ""), total=len(todo))

        def keep(batch: list[dict[str, Any]]) -> None:
            fresh = [row for row in batch if row["photo"] not in done]
            if parts and fresh:
                parts.add(fresh)
            done.update({row["photo"]: row for row in fresh})
            bar.advance(task, len(fresh))

        if engine == "ray":
            _predict_on_ray(predictor, choice, params, distributed, todo, done=done, keep=keep)
        else:
            predict_in_process(predictor, todo, batch_photos=settings.batch_photos, on_batch=keep)
    return done


def _engine(settings: BatchPredictParams, photos: int, address: str | None = None) -> str:
    """``ray`` or ``local``, as ``distributed.predict.engine`` says.

    ``auto`` uses Ray only where it can be faster than this one process: a cluster is named
    (``distributed.address`` or ``RAY_ADDRESS``), or this machine has more than one GPU for the
    actors to share out, and at least ``min_photos`` photos are left to predict. On one machine
    without GPUs, one process already uses every core (OpenVINO, torch): Ray with an actor per
    core measured no faster there, and pays its start (benchmarks/RESULTS.md, ray_predict rows).

    Raises:
        ImportError: ``engine: ray`` without Ray installed.
    """
    if settings.engine == "ray" and not ray_installed():
        raise ImportError(
            'distributed.predict.engine is "ray" and Ray is not installed: pip install -e ".[ray]", '
            "or set engine: auto (conf/<env>/parameters_distributed.yml)"
        )
    if settings.engine != "auto" or photos == 0:
        return settings.engine if photos else "local"
    if photos < settings.min_photos:
        return "local"
    more_than_here = cluster_address(address) is not None or _gpus_here() > 1
    if not more_than_here:
        return "local"
    if not ray_installed():
        logger.info('%d photos in one process: Ray would spread them (pip install -e ".[ray]")', photos)
        return "local"
    return "ray"


def _gpus_here() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _predict_on_ray(
    predictor: Predictor,
    choice: ModelChoice,
    params: PredictParams,
    distributed: DistributedParams,
    todo: list[PhotoJob],
    *,
    done: dict[str, dict[str, Any]],
    keep: Callable[[list[dict[str, Any]]], None],
) -> None:
    settings = distributed.predict
    model = ModelFiles.of(predictor, Path(choice.checkpoint), params, choice.grade_classifier or None)
    with ray_session(distributed.address) as session:
        logger.info(
            "Ray at %s: %d nodes, %g CPUs; actors of %g CPU, %g GPU; batches of %d photos",
            session.address,
            len(session.nodes()),
            session.cpus(),
            settings.cpus_per_actor,
            settings.gpus_per_actor,
            settings.batch_photos,
        )
        predict_on_ray(
            model,
            todo,
            actors=settings.actors,
            batch_photos=settings.batch_photos,
            cpus_per_actor=settings.cpus_per_actor,
            gpus_per_actor=settings.gpus_per_actor,
            attempts=settings.attempts,
            finished=lambda: set(done),
            on_batch=keep,
        )


def _check_files(photos: Photos) -> tuple[list[dict[str, Any]], list[tuple[Path, dict[str, Any]]]]:
    """The folder's files that cannot be predicted (a row each, with the reason), and the photos
    that can, with their header's probe."""
    rows, good = [], []
    for f in photos.unsupported:
        rows.append(
            _photo_row(
                photos.root,
                f,
                "unsupported image format",
                f"{f.suffix} photos are not read; export them as JPEG or PNG",
            )
        )
    for f in photos.other:
        rows.append(_photo_row(photos.root, f, "not an image", "a file of no photo or annotation type"))
    for f in photos.photos:
        probe = probe_image(str(f))
        if probe["image_problem"]:
            rows.append(_photo_row(photos.root, f, probe["image_problem"], probe["image_detail"]))
        else:
            good.append((f, probe))
    return rows, good


def _photo_row(root: Path, f: Path, reason: str, detail: str) -> dict[str, Any]:
    return {
        "photo": f.relative_to(root).as_posix(),
        "status": "skipped",
        "reason": reason,
        "detail": detail,
        "width": 0,
        "height": 0,
        "sliced": False,
    }


def summarise_photos(
    lesions: pd.DataFrame, photo_table: pd.DataFrame, model_info: dict[str, Any], grading: GradingParams
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float]]:
    """Lesions per class, total, and severity grade per predicted photo; the skipped files.

    Args:
        lesions: ``predict_new_photos``'s lesions.
        photo_table: ``predict_new_photos``'s files.
        model_info: ``choose_model``'s result (model and threshold, recorded on every row).
        grading: the ``grading`` parameters (the count→grade rule, counted classes).

    Returns:
        The summary (one row per predicted photo: ``photo``, one count column per class,
        ``lesions`` (the counted classes' total), ``grade`` and ``grade_name`` (the most probable
        grade under the model's probabilities), ``p.<grade name>`` and ``grade_probabilities``
        ("moderate 72 %, severe 26 %": the grade model's, from the photo's calibrated
        detections; the model records grade model, ``model.predictor.grade_photos``), ``width``,
        ``height``, ``sliced``, ``model``, ``threshold``), the skipped files with their reason,
        and MLflow metrics (photos predicted and skipped, lesions, photos per grade).
    """
    predicted = photo_table[photo_table.status == "predicted"].reset_index(drop=True)
    classes = sorted(lesions["class"].unique()) if len(lesions) else []
    per_class = pd.crosstab(lesions["image"], lesions["class"]) if len(lesions) else pd.DataFrame()
    summary = predicted[["photo"]].copy()
    for cls in classes:
        summary[cls] = summary.photo.map(per_class[cls]).fillna(0).astype(int)
    choice = ModelChoice.model_validate(model_info)
    empty = pd.DataFrame(columns=PREDICTION_COLUMNS)
    candidates = [c if isinstance(c, pd.DataFrame) else empty for c in predicted.get("candidates", [])]
    sides = pd.Series(
        np.sqrt(predicted.width.astype(float) * predicted.height.astype(float)).to_numpy(), index=predicted.photo
    )
    scored = [c for c in predicted.columns if str(c).startswith(SCORE_PREFIX)]
    graded = grade_photos(
        choice.record.grader(GradingRule.from_params(grading)),
        lesions,
        pd.concat([empty, *candidates], ignore_index=True),
        list(summary.photo),
        sides,
        predicted.set_index("photo")[scored] if scored else None,
    )
    summary = summary.join(graded.drop(columns="photo"))  # one answer: the most probable grade, with its probabilities
    summary = summary.join(predicted[["width", "height", "sliced"]])
    summary["model"] = choice.model_version
    summary["threshold"] = choice.threshold
    skipped = photo_table[photo_table.status == "skipped"][["photo", "reason", "detail"]].reset_index(drop=True)
    metrics = {
        "photos_predicted": len(summary),
        "photos_skipped": len(skipped),
        "lesions": int(summary.lesions.sum()),
        "threshold": float(choice.threshold),
        **{f"photos_graded.{name}": int((summary.grade == k).sum()) for k, name in enumerate(grading.names)},
    }
    for row in skipped.itertuples():
        logger.warning("Skipped %s: %s (%s)", row.photo, row.reason, row.detail)
    logger.info(
        "Predicted %d photos (%d lesions), skipped %d; grades: %s",
        len(summary),
        metrics["lesions"],
        len(skipped),
        summary.grade_name.value_counts().to_dict(),
    )
    return summary, skipped, metrics
