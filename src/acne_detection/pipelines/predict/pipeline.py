"""Wiring of the ``predict`` pipeline (not part of ``__default__``: run it with ``--pipeline predict``)."""

from kedro.pipeline import Pipeline, node, pipeline

from acne_detection.framework.tracking import to_mlflow_metrics
from acne_detection.pipelines.predict.nodes import choose_model, predict_new_photos, summarise_photos
from acne_detection.pipelines.predict.report import draw_annotated_photos, render_report


def create_pipeline(**kwargs) -> Pipeline:
    """new photos + a model and its own threshold → lesions → counts and grades → annotated copies, report."""
    return pipeline(
        [
            node(
                choose_model,
                ["trained_weights", "model_record", "params:predict", "params:grading", "grade_classifier"],
                "prediction_model",
                name="choose_model",
            ),
            node(
                predict_new_photos,
                ["new_photos", "prediction_model", "params:predict", "params:distributed"],
                ["predicted_lesions", "predicted_files"],
                name="predict_new_photos",
            ),
            node(
                summarise_photos,
                ["predicted_lesions", "predicted_files", "prediction_model", "params:grading"],
                ["photo_summary", "skipped_photos", "prediction_metrics"],
                name="summarise_photos",
            ),
            node(to_mlflow_metrics, "prediction_metrics", "prediction_metrics_mlflow", name="log_prediction_metrics"),
            node(
                draw_annotated_photos,
                ["new_photos", "predicted_lesions", "photo_summary", "params:predict"],
                "annotated_photos",
                name="draw_annotated_photos",
            ),
            node(
                render_report,
                [
                    "photo_summary",
                    "skipped_photos",
                    "annotated_photos",
                    "prediction_model",
                    "params:predict",
                    "params:grading",
                ],
                "prediction_report",
                name="render_report",
            ),
        ],
        tags=["predict"],
    )
