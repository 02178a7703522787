"""Wiring of the ``preview`` pipeline."""

from kedro.pipeline import Pipeline, node, pipeline

from acne_detection.pipelines.preview.nodes import count_box_losses, preview_augmentations, preview_each_augmentation


def create_pipeline(**kwargs) -> Pipeline:
    """YOLO dataset + training hyperparameters → augmented samples, per-augmentation panel, box losses."""
    inputs = ["yolo_dataset", "params:train", "params:preview"]
    return pipeline(
        [
            node(preview_augmentations, inputs, "augmentation_preview", name="preview_augmentations"),
            node(preview_each_augmentation, inputs, "augmentation_panels", name="preview_each_augmentation"),
            node(count_box_losses, inputs, "augmentation_box_losses", name="count_box_losses"),
        ],
        tags=["preview"],  # filters the DAG in kedro-viz by stage
    )
