"""Wiring of the ``train`` pipeline."""

from kedro.pipeline import Pipeline, node, pipeline

from acne_detection.framework.tracking import to_mlflow_metrics
from acne_detection.pipelines.train.grade_classifier import train_grade_classifier
from acne_detection.pipelines.train.health import assess_training_health
from acne_detection.pipelines.train.nodes import plot_training_curves, report_training_health
from acne_detection.training.detector import train_detector


def create_pipeline(**kwargs) -> Pipeline:
    """YOLO dataset + pretrained weights → trained weights, history, loss curves, health verdict
    (registered after ``eval``, by the ``register`` pipeline)."""
    return pipeline(
        [
            node(
                train_detector,
                ["yolo_dataset", "pretrained_weights", "training_workdir", "params:train"],
                ["trained_weights", "training_history", "training_summary"],
                name="train_detector",
            ),
            node(
                train_grade_classifier,
                [
                    "yolo_dataset",
                    "split_images",
                    "pretrained_weights",
                    "training_workdir",
                    "params:grade_classifier",
                    "params:grading",
                ],
                "grade_classifier",
                name="train_grade_classifier",
            ),
            node(to_mlflow_metrics, "training_summary", "training_summary_mlflow", name="log_training_summary"),
            node(plot_training_curves, "training_history", "training_curves", name="plot_training_curves"),
            node(assess_training_health, "training_history", "training_health", name="assess_training_health"),
            node(report_training_health, "training_health", "training_health_tags", name="report_training_health"),
        ],
        tags=["train"],  # filters the DAG in kedro-viz by stage
    )
