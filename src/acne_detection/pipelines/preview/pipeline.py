"""Wiring of the ``preview`` pipeline."""

from kedro.pipeline import Pipeline, node, pipeline

from acne_detection.pipelines.preview.nodes import preview_augmentations


def create_pipeline(**kwargs) -> Pipeline:
    """YOLO dataset + training hyperparameters → a grid of augmented samples."""
    return pipeline(
        [
            node(preview_augmentations, ["yolo_dataset", "params:train", "params:preview"], "augmentation_preview",
                 name="preview_augmentations"),
        ]
    )
