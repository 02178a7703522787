"""The ``train`` pipeline: fine-tune a COCO-pretrained YOLOv8 on the YOLO dataset."""

from acne_detection.pipelines.train.pipeline import create_pipeline

__all__ = ["create_pipeline"]
