"""The ``data`` pipeline: ingest an export, validate it, split it without leakage, write YOLO."""

from acne_detection.pipelines.data.pipeline import create_pipeline

__all__ = ["create_pipeline"]
