"""The ``sweep`` pipeline: training recipes compared on the validation split."""

from acne_detection.pipelines.sweep.pipeline import create_pipeline

__all__ = ["create_pipeline"]
