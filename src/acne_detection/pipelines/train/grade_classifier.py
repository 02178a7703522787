"""The ``train`` pipeline's grade classifier: a whole-photo classifier of the grade
(``acne_detection.core.grade_classifier``), fine-tuned from the COCO backbone on the training
split's graded photos and validated on the validation split's, beside the detector."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
from ultralytics.models.yolo.classify import ClassificationTrainer

from acne_detection.core.accelerator import detect_device
from acne_detection.core.files import sha256_of
from acne_detection.core.grade_classifier import write_image_folders
from acne_detection.core.params import GradeClassifierParams, GradingParams
from acne_detection.datasets import YoloDataset
from acne_detection.datasets.weights import PretrainedWeights
from acne_detection.training.trainers import WithoutIntegrations, epoch_history

logger = logging.getLogger(__name__)


class ProjectClassificationTrainer(WithoutIntegrations, ClassificationTrainer):
    """Ultralytics' classification trainer without its integrations (``training.trainers.WithoutIntegrations``)."""


def _graded_photos(dataset: YoloDataset, split_images: pd.DataFrame) -> pd.DataFrame:
    """The training and validation photos with a true grade: ``path``, ``split``, ``grade``."""
    grades = pd.to_numeric(split_images.set_index("image_id")["grade"], errors="coerce")
    manifest = dataset.manifest[dataset.manifest.split.isin(["train", "val"])]
    photos = pd.DataFrame(
        {
            "path": [str(dataset.root / image) for image in manifest.image],
            "split": manifest.split.to_numpy(),
            "grade": manifest.image_id.map(grades).to_numpy(),
        }
    )
    return photos.dropna(subset=["grade"]).astype({"grade": int})


def train_grade_classifier(
    dataset: YoloDataset,
    split_images: pd.DataFrame,
    pretrained: PretrainedWeights,
    workdir: Path,
    params: GradeClassifierParams,
    grading: GradingParams,
) -> dict[str, Any]:
    """Fine-tune ``yolov8n-cls`` (the COCO checkpoint's backbone transferred) to tell the grade from
    the whole photo, when there are enough graded training photos of at least two grades.

    Args:
        dataset: the YOLO dataset (its photos; copies of a source never straddle splits).
        split_images: the split manifest (each photo's true ``grade``).
        pretrained: the COCO checkpoint (its backbone seeds the classifier).
        workdir: the folder Ultralytics writes into (the classifier gets ``grade_classifier/`` there).
        params: the ``grade_classifier`` parameters.
        grading: the ``grading`` parameters (how many grades).

    Returns:
        ``weights`` (the kept, last epoch's checkpoint, ``""`` when none was trained), ``sha256``,
        ``imgsz``, ``grades`` (the number of grades of the rule), ``photos`` per split,
        ``val_top1`` (Ultralytics' validation accuracy of the kept, last epoch) and ``reason``.
    """
    record: dict[str, Any] = {"weights": "", "sha256": "", "imgsz": params.imgsz, "grades": len(grading.names)}
    photos = _graded_photos(dataset, split_images)
    if not params.enabled:
        return {**record, "reason": "grade_classifier.enabled is false"}
    too_few = _too_few_photos(photos, params)
    if too_few:
        logger.info("No grade classifier: %s", too_few)
        return {**record, "reason": too_few}
    root = workdir / "grade_classifier"
    counts = write_image_folders(photos, root / "folders")
    trainer = _fit_classifier(root, pretrained=pretrained, counts=counts, params=params)
    kept = root / "grade_classifier.pt"  # a name of its own beside the detector's weights, where both travel
    # The last epoch's weights, not Ultralytics' best.pt: best is the epoch that scored highest on the
    # validation photos, and those photos then choose the grade model, the classifier pooled in or not.
    # A classifier picked on them would flatter that candidate (on the dev slice the best of 15 epochs
    # scored 0.667 there, the last 0.637), so validation would no longer be a fair judge.
    shutil.copyfile(trainer.last, kept)
    top1 = _last_epoch_top1(epoch_history(trainer))
    logger.info("Grade classifier: validation top-1 accuracy %.3f at its last epoch (%s)", top1, kept)
    return {
        **record,
        "weights": str(kept),
        "sha256": sha256_of(kept),
        "photos": counts,
        "val_top1": top1,
        "reason": f"trained on {counts.get('train', 0)} graded photos",
    }


def _last_epoch_top1(history: pd.DataFrame) -> float:
    """The last epoch's validation top-1 accuracy in a trainer's ``epoch_history`` (NaN when it has none)."""
    column = "metrics/accuracy_top1"
    return float(history[column].iloc[-1]) if column in history and len(history) else float("nan")


def _too_few_photos(photos: pd.DataFrame, params: GradeClassifierParams) -> str:
    """Why ``photos`` (``_graded_photos``' table) are too few to train on, or ``""`` when they are enough:
    ``min_photos`` training photos of at least two grades, and one validation photo."""
    train = photos[photos.split == "train"]
    n_val = int((photos.split == "val").sum())
    if len(train) >= params.min_photos and train.grade.nunique() >= 2 and n_val:
        return ""
    return (
        f"{len(train)} graded training photos of {train.grade.nunique()} grade(s) and "
        f"{n_val} graded validation photos: too few to train a grade classifier "
        f"(grade_classifier.min_photos {params.min_photos}, two grades, one validation photo)"
    )


def _fit_classifier(
    root: Path, *, pretrained: PretrainedWeights, counts: dict[str, int], params: GradeClassifierParams
) -> ClassificationTrainer:
    """Fine-tune the classifier on the image folders under ``root / "folders"``, writing into
    ``root / "train"`` (emptied first).

    Returns:
        The finished trainer (its ``best`` checkpoint and validation ``metrics``).
    """
    from ultralytics import YOLO

    weights, origin = pretrained.resolve()
    model = YOLO("yolov8n-cls.yaml").load(str(weights))  # the backbone's weights; the head starts untrained
    device, device_name = detect_device(params.device)
    logger.info(
        "Training the grade classifier on %d photos (%d validation) at %d px on %s (%s), from %s",
        counts.get("train", 0),
        counts.get("val", 0),
        params.imgsz,
        device,
        device_name,
        origin,
    )
    shutil.rmtree(root / "train", ignore_errors=True)
    model.train(
        trainer=ProjectClassificationTrainer,
        data=str(root / "folders"),
        epochs=params.epochs,
        imgsz=params.imgsz,
        batch=params.batch,
        device=device,
        workers=params.workers,
        seed=params.seed,
        deterministic=True,
        project=str(root),
        name="train",
        exist_ok=True,
        plots=False,
        verbose=False,
    )
    return model.trainer
