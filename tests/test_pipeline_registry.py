"""The registry: ``__default__`` is data → preview → train → eval → register; ``predict`` stands apart."""

from __future__ import annotations

from kedro.framework.startup import bootstrap_project

from tests.conftest import PROJECT_ROOT


def test_default_excludes_predict_and_predict_is_registered() -> None:
    bootstrap_project(PROJECT_ROOT)
    from acne_detection.pipeline_registry import register_pipelines

    pipelines = register_pipelines()
    assert set(pipelines) == {"__default__", "data", "preview", "train", "eval", "register", "predict", "sweep"}
    default = {n.name for n in pipelines["__default__"].nodes}
    stages = ("data", "preview", "train", "eval", "register")
    assert default == {n.name for name in stages for n in pipelines[name].nodes}
    assert not default & {n.name for n in pipelines["predict"].nodes}
    assert not default & {n.name for n in pipelines["sweep"].nodes}  # the sweep runs only when asked for
    assert "yolo_dataset" in pipelines["sweep"].inputs()  # on the data pipeline's split
    # the version is registered with the threshold eval chose for it: after eval, never before
    assert "model_threshold" in pipelines["register"].inputs() and "registered_model" in pipelines["register"].outputs()
    assert {"choose_model", "predict_new_photos", "render_report"} <= {n.name for n in pipelines["predict"].nodes}
    assert "new_photos" in pipelines["predict"].inputs() and "new_photos" not in pipelines["__default__"].inputs()
