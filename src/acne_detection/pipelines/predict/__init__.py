"""The ``predict`` pipeline: new photos in, lesions, counts, grades and a report out."""

from acne_detection.pipelines.predict.pipeline import create_pipeline

__all__ = ["create_pipeline"]
