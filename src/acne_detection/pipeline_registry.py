"""Project pipelines."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline


def register_pipelines() -> dict[str, Pipeline]:
    """Register every pipeline found (``predict`` and ``sweep`` run only when asked for), and
    ``__default__`` = data → preview → train → eval →
    register (the model version is registered with the operating point eval chose for it).

    ``predict`` is registered but not part of ``__default__``: it works on new photos with a
    model already trained, so ``kedro run`` never predicts, and ``kedro run --pipeline predict``
    never trains.

    Returns:
        A mapping from pipeline names to ``Pipeline`` objects.
    """
    pipelines = find_pipelines(raise_errors=True)
    # Kedro may load only the pipelines a command asks for; __default__ is whatever of the five is there
    pipelines["__default__"] = sum(
        pipelines[name] for name in ("data", "preview", "train", "eval", "register") if name in pipelines
    )
    return pipelines
