"""The ``preview`` pipeline: the augmented training samples, exactly as the trainer builds them."""

from acne_detection.pipelines.preview.pipeline import create_pipeline

__all__ = ["create_pipeline"]
