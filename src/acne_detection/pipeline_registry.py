"""Project pipelines."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline


def register_pipelines() -> dict[str, Pipeline]:
    """Register every pipeline found (``predict``, ``sweep``, ``review`` and ``reviewed`` run only
    when asked for; ``review`` predicts through predict's own nodes), and
    ``__default__`` = data → preview → train → eval →
    register (the model version is registered with the operating point eval chose for it).

    ``predict`` is registered but not part of ``__default__``: it works on new photos with a
    model already trained, so ``kedro run`` never predicts, and ``kedro run --pipeline predict``
    never trains.

    Returns:
        A mapping from pipeline names to ``Pipeline`` objects.
    """
    pipelines = find_pipelines(raise_errors=True)
    if "review" in pipelines:  # pre-annotation predicts with predict's own nodes (model, threshold, photos)
        from acne_detection.pipelines.predict import create_pipeline as predict

        pipelines["review"] = (
            predict().only_nodes("choose_model", "predict_new_photos", "summarise_photos") + pipelines["review"]
        )
    # Kedro may load only the pipelines a command asks for; __default__ is whatever of the five is there
    pipelines["__default__"] = sum(
        pipelines[name] for name in ("data", "preview", "train", "eval", "register") if name in pipelines
    )
    return pipelines
