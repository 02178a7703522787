"""The ``register`` pipeline: the trained and evaluated detector into the MLflow Model Registry."""

from acne_detection.pipelines.register.pipeline import create_pipeline

__all__ = ["create_pipeline"]
