"""The ``reviewed`` pipeline: what the reviewers corrected, measured, and kept as training data."""

from acne_detection.pipelines.reviewed.pipeline import create_pipeline

__all__ = ["create_pipeline"]
