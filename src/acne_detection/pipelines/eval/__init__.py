"""The ``eval`` pipeline: predict the test split, then measure, chart and report."""

from acne_detection.pipelines.eval.pipeline import create_pipeline

__all__ = ["create_pipeline"]
