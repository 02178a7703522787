"""Wiring of the ``review`` pipeline (with predict's nodes, composed in the registry)."""

from kedro.pipeline import Pipeline, node, pipeline

from acne_detection.pipelines.review.nodes import build_review_tasks, model_classes, write_cvat_coco


def create_pipeline(**kwargs) -> Pipeline:
    """predict's photo summary and lesions → a Label Studio project pre-annotated, and a CVAT file."""
    return pipeline(
        [
            node(model_classes, "prediction_model", "prediction_classes", name="model_classes"),
            node(
                build_review_tasks,
                [
                    "photo_summary",
                    "predicted_lesions",
                    "prediction_model",
                    "prediction_classes",
                    "new_photos",
                    "params:grading",
                    "params:review",
                ],
                "label_studio_project",
                name="build_review_tasks",
            ),
            node(
                write_cvat_coco,
                ["photo_summary", "predicted_lesions", "prediction_model", "prediction_classes"],
                "review_cvat",
                name="write_cvat_coco",
            ),
        ],
        tags=["review"],
    )
