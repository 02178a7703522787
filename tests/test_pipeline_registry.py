"""The registry: ``__default__`` is data → preview → train → eval → register; ``predict`` stands apart."""

from __future__ import annotations

from kedro.framework.startup import bootstrap_project

from tests.conftest import PROJECT_ROOT


def test_default_excludes_predict_and_predict_is_registered() -> None:
    bootstrap_project(PROJECT_ROOT)
    from acne_detection.pipeline_registry import register_pipelines

    pipelines = register_pipelines()
    assert set(pipelines) == {
        *("__default__", "data", "preview", "train", "eval", "register", "predict", "sweep", "review", "reviewed")
    }
    default = {n.name for n in pipelines["__default__"].nodes}
    stages = ("data", "preview", "train", "eval", "register")
    assert default == {n.name for name in stages for n in pipelines[name].nodes}
    assert not default & {n.name for n in pipelines["predict"].nodes}
    assert not default & {n.name for n in pipelines["sweep"].nodes}  # the sweep runs only when asked for
    assert "yolo_dataset" in pipelines["sweep"].inputs()  # on the data pipeline's split
    # the version is registered with the threshold eval chose for it: after eval, never before
    assert "model_record" in pipelines["register"].inputs() and "registered_model" in pipelines["register"].outputs()
    assert {"choose_model", "predict_new_photos", "render_report"} <= {n.name for n in pipelines["predict"].nodes}
    assert "new_photos" in pipelines["predict"].inputs() and "new_photos" not in pipelines["__default__"].inputs()
    # review pre-annotates with predict's own nodes, and the review loop never runs in a plain `kedro run`
    assert {"choose_model", "predict_new_photos", "build_review_tasks"} <= {n.name for n in pipelines["review"].nodes}
    assert not default & {n.name for n in pipelines["review"].nodes + pipelines["reviewed"].nodes}


def test_every_node_sees_its_parameter_groups_as_their_typed_models() -> None:
    """A node's ``params:<group>`` input is annotated with the group's model: Kedro validates it
    before the run and hands the node that model, so no node parses its settings again."""
    import inspect
    import typing

    bootstrap_project(PROJECT_ROOT)
    from acne_detection.core.params import PARAMETER_GROUPS
    from acne_detection.pipeline_registry import register_pipelines

    checked, wrong = 0, []
    for node in (
        register_pipelines()["__default__"].nodes
        + register_pipelines()["predict"].nodes
        + register_pipelines()["sweep"].nodes
    ):
        func = getattr(node.func, "__wrapped__", node.func)
        hints = typing.get_type_hints(func)
        names = list(inspect.signature(func).parameters)
        for position, dataset in enumerate(node.inputs):
            group = dataset.removeprefix("params:")
            if dataset.startswith("params:") and group in PARAMETER_GROUPS:
                checked += 1
                if hints.get(names[position]) is not PARAMETER_GROUPS[group]:
                    wrong.append(f"{node.name}({names[position]}: {hints.get(names[position])}) <- {dataset}")
        source = inspect.getsource(func)
        assert "parse(" not in source, f"{node.name} parses its settings again"
    assert not wrong, wrong
    assert checked >= 30  # every stage takes settings: a registry that lost its nodes would pass vacuously
