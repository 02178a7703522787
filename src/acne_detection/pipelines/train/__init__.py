"""The ``train`` pipeline: fine-tune a pretrained YOLOv8 (COCO's ``yolov8n.pt`` by default) on the YOLO dataset."""

from acne_detection.pipelines.train.pipeline import create_pipeline

__all__ = ["create_pipeline"]
