"""The ``review`` pipeline: the model pre-annotates new photos in Label Studio (and for CVAT)."""

from acne_detection.pipelines.review.pipeline import create_pipeline

__all__ = ["create_pipeline"]
