"""Fine-tuning the detector: the ``train`` stage's node and each ``sweep`` recipe run this."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
from ultralytics import YOLO

from acne_detection.core.accelerator import detect_device, device_settings, environment_tags
from acne_detection.core.params import TrainParams
from acne_detection.core.training_config import augmentation_warnings, smallest_lesion_px, training_overrides
from acne_detection.datasets import PretrainedWeights, YoloDataset
from acne_detection.framework.live_metrics import LiveMetrics, replay_history
from acne_detection.framework.tracking import current_run_id, mark_run_killed
from acne_detection.training.resume import prepare_training
from acne_detection.training.trainers import ProjectTrainer, epoch_history

logger = logging.getLogger(__name__)


def train_detector(
    dataset: YoloDataset,
    pretrained: PretrainedWeights,
    workdir: Path,
    params: TrainParams,
    *,
    callbacks: dict[str, Any] | None = None,
) -> tuple[Path, pd.DataFrame, dict[str, Any]]:
    """Fine-tune YOLOv8 from pretrained weights (COCO's ``yolov8n.pt``, or the architecture's own
    checkpoint), or train it from scratch (``pretrained: false``),
    resuming an interrupted run when its settings are unchanged.

    Args:
        dataset: the YOLO-format dataset.
        pretrained: the lazily resolved pretrained checkpoints (``yolov8n.pt``; an architecture
            the catalog gives a checkpoint of its own, under ``architectures:``, starts from that one).
        workdir: the folder Ultralytics writes its checkpoints into.
        params: the ``train`` parameters (``device: 0,1`` trains on two GPUs with DDP).
        callbacks: more Ultralytics callbacks (``{event: function}``), as the sweep's checkpoints.

    Returns:
        The best checkpoint, the per-epoch history (Ultralytics' ``results.csv``) and a
        summary of how training ran (device, weights, epochs, parameter counts).
    """
    for warning in augmentation_warnings(
        params.augment, imgsz=params.imgsz, smallest_box_px=smallest_lesion_px(dataset.manifest, params.imgsz)
    ):
        logger.warning(warning)
    device, device_name = detect_device(params.device)
    if params.pretrained:
        pretrained = pretrained.for_architecture(params.architecture)
    plan = prepare_training(
        workdir, _resume_settings(params, dataset, pretrained.name), params.resume, current_run_id()
    )
    logger.info("Training: %s", plan.reason)
    if plan.resume:
        source = {
            "weights_source": "resumed checkpoint",
            "resumed_from_run": str(plan.previous_run_id),
            "resumed_after_epoch": str(plan.completed_epochs),
        }
        replay_history(plan.history)
        mark_run_killed(plan.previous_run_id)
        model = YOLO(str(plan.checkpoint))
    else:
        weights, origin = (
            pretrained.resolve()
            if params.pretrained
            else (Path(pretrained.name).with_suffix(".yaml"), "from scratch (random init)")
        )
        source = {"weights_source": origin}
        model = _build_model(Path(weights), params.architecture, pretrained=params.pretrained)
        if params.architecture != "yolov8n" and params.pretrained:
            source["weights_source"] = f"{origin}, transferred into {params.architecture}.yaml where shapes match"
    tags = {
        **environment_tags(device, device_name),
        "pretrained": str(params.pretrained),
        "architecture": params.architecture,
        "pretrained_checkpoint": pretrained.name if params.pretrained else "",
        **source,
    }
    logger.info("Training on %s (%s) from %s", device, device_name, tags["weights_source"])
    for event, callback in LiveMetrics.for_active_run(tags).callbacks().items():
        model.add_callback(event, callback)
    for event, callback in (callbacks or {}).items():
        model.add_callback(event, callback)
    if plan.resume:  # Ultralytics restores the interrupted run's own settings from the checkpoint
        workers = device_settings(device, batch=params.batch, workers=params.workers)["workers"]
        model.train(trainer=ProjectTrainer, resume=True, device=device, workers=workers)
    else:
        model.train(
            trainer=ProjectTrainer,
            **training_overrides(params, data_yaml=dataset.data_yaml, device=device, workdir=workdir),
        )
    return _results(model.trainer, params, tags)


def _build_model(weights: Path, architecture: str, *, pretrained: bool) -> YOLO:
    """The model to fine-tune: the COCO checkpoint itself, or ``architecture``'s YAML with the
    checkpoint's weights loaded where names and shapes match (Ultralytics' ``load``: for
    ``yolov8n-p2`` from ``yolov8n.pt`` the backbone, the neck and the extra stride-4 head start
    untrained; for ``yolov8s`` from ``yolov8s-worldv2.pt`` 345 of 355 tensors: all but the last
    convolution of each neck block, whose input YOLO-World widens for its text attention, and the
    class branch's last layer, which YOLO-World ends in text embeddings)."""
    if architecture == "yolov8n":
        return YOLO(str(weights))
    model = YOLO(f"{architecture}.yaml")
    return model.load(str(weights)) if pretrained else model


def parameter_counts(model: Any, freeze: int) -> tuple[int, int]:
    """Total and trainable parameters of a detection model under ``freeze``, by the rule
    Ultralytics' trainer applies (layers ``model.0.`` .. ``model.{freeze-1}.`` and every ``.dfl``
    frozen), not by ``requires_grad``: in multi-GPU training the launching process never sets
    up the model, so its flags say nothing about what the workers trained.

    Args:
        model: the ``torch.nn.Module`` (or an object with ``named_parameters``).
        freeze: ``train.freeze``, the number of leading layers frozen.

    Returns:
        ``(total, trainable)``.
    """
    frozen_names = [f"model.{i}." for i in range(freeze)] + [".dfl"]
    total = trainable = 0
    for name, tensor in model.named_parameters():
        total += tensor.numel()
        if not any(f in name for f in frozen_names) and tensor.dtype.is_floating_point:
            trainable += tensor.numel()
    return total, trainable


def _results(trainer: Any, p: Any, tags: dict[str, str]) -> tuple[Path, pd.DataFrame, dict[str, Any]]:
    """Best checkpoint, per-epoch history and summary of a finished Ultralytics trainer."""
    history = epoch_history(trainer)
    total, trainable = parameter_counts(trainer.model, p.freeze)
    summary = {
        **tags,
        "epochs_run": int(len(history)),
        "imgsz": p.imgsz,
        "best_epoch": int(history["metrics/mAP50-95(B)"].idxmax()) + 1,
        "parameters_total": total,
        "parameters_trainable": trainable,
        "frozen_layers": p.freeze,
        "mlflow_run_id": current_run_id() or "",
    }
    best = Path(trainer.best if Path(trainer.best).exists() else trainer.last)
    return best, history, summary


def _resume_settings(p: Any, dataset: YoloDataset, weights_name: str) -> dict[str, Any]:
    """What must be unchanged for an interrupted run to be resumed rather than restarted."""
    return {
        "data": dataset.manifest_sha256(),
        "model": weights_name,
        "pretrained": p.pretrained,
        **p.model_dump(exclude={"device", "workers", "resume"}),
    }
