"""Wiring of the ``reviewed`` pipeline (``kedro run --pipeline reviewed``)."""

from kedro.pipeline import Pipeline, node, pipeline

from acne_detection.framework.tracking import to_mlflow_metrics
from acne_detection.pipelines.reviewed.nodes import keep_reviews, measure_review, plot_review


def create_pipeline(**kwargs) -> Pipeline:
    """The Label Studio project's export → edits per photo, review metrics, a figure; the export kept."""
    return pipeline(
        [
            node(keep_reviews, "label_studio_project", "reviewed_export", name="keep_reviews"),
            node(measure_review, "reviewed_export", ["review_edits", "review_metrics"], name="measure_review"),
            node(to_mlflow_metrics, "review_metrics", "review_metrics_mlflow", name="log_review_metrics"),
            node(plot_review, "review_edits", "review_plot", name="plot_review"),
        ],
        tags=["reviewed"],
    )
