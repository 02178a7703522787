"""Wiring of the ``eval`` pipeline."""

from kedro.pipeline import Pipeline, node, pipeline

from acne_detection.pipelines.eval.nodes import (
    evaluate_detections, plot_confusion_matrix, predict_test_split, report_headline,
)
from acne_detection.tracking import to_mlflow_metrics


def create_pipeline(**kwargs) -> Pipeline:
    """Trained weights + test split → predictions → metrics, confusion matrix, headline."""
    return pipeline(
        [
            node(predict_test_split, ["trained_weights", "yolo_dataset", "params:eval"], "test_predictions",
                 name="predict_test_split"),
            node(evaluate_detections, ["test_predictions", "ground_truth", "yolo_dataset", "params:eval"],
                 ["test_metrics_per_class", "confusion_matrix", "test_metrics"], name="evaluate_detections"),
            node(plot_confusion_matrix, "confusion_matrix", "confusion_matrix_plot", name="plot_confusion_matrix"),
            node(to_mlflow_metrics, "test_metrics", "test_metrics_mlflow", name="log_test_metrics"),
            node(report_headline, "test_metrics_per_class", "results_summary", name="report_headline"),
        ]
    )
