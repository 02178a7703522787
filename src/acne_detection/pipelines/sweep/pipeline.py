"""Wiring of the ``sweep`` pipeline (``kedro run --pipeline sweep``; not part of ``kedro run``)."""

from kedro.pipeline import Pipeline, node, pipeline

from acne_detection.pipelines.sweep.nodes import choose_recipe, recipe_yaml, run_sweep
from acne_detection.pipelines.sweep.plots import plot_sweep


def create_pipeline(**kwargs) -> Pipeline:
    """The data pipeline's split → recipes trained and validated → comparison, figure, chosen recipe."""
    return pipeline(
        [
            node(
                run_sweep,
                [
                    "yolo_dataset",
                    "pretrained_weights",
                    "ground_truth",
                    "split_images",
                    "params:sweep",
                    "params:train",
                    "params:eval",
                    "params:grading",
                    "params:distributed",
                ],
                ["sweep_results", "sweep_curves"],
                name="run_sweep",
            ),
            node(plot_sweep, ["sweep_results", "sweep_curves"], "sweep_plot", name="plot_sweep"),
            node(
                choose_recipe,
                ["sweep_results", "params:sweep", "params:train"],
                ["sweep_choice", "sweep_report"],
                name="choose_recipe",
            ),
            node(recipe_yaml, "sweep_choice", "sweep_recipe", name="write_sweep_recipe"),
        ],
        tags=["sweep"],
    )
