"""Wiring of the ``register`` pipeline."""

from kedro.pipeline import Pipeline, node, pipeline

from acne_detection.pipelines.register.nodes import describe_for_registry


def create_pipeline(**kwargs) -> Pipeline:
    """Trained weights + eval's operating point → a registered model version that serves at it.

    It comes after ``eval`` in ``kedro run`` so the logged model carries the threshold chosen
    for its own weights; ``kedro run --pipeline register`` registers the last trained and
    evaluated model (once: weights already registered are not registered again).
    """
    return pipeline(
        [
            node(
                describe_for_registry,
                [
                    "trained_weights",
                    "training_health",
                    "yolo_dataset",
                    "params:grading",
                    "params:predict",
                    "model_record",
                    "model_card",
                    "split_images",
                    "grade_classifier",
                ],
                "registered_model",
                name="register_model",
            ),
        ],
        tags=["register"],
    )
