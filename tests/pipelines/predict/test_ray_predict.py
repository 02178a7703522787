"""Batch prediction: in one process by default for a small folder, and on Ray Data's actors across
a real two-node cluster (``tests/ray_cluster.py``), where every photo's count reconciles with the
one-process path, work runs on both nodes, and a node lost midway costs no photo and doubles none.
A run stopped midway resumes from its kept batches without predicting them again."""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from acne_detection.core.params import DistributedParams, PredictParams
from acne_detection.datasets.photo_folder import Photos
from acne_detection.model import batch
from acne_detection.model.predictor import ModelChoice
from acne_detection.pipelines.predict import nodes
from acne_detection.pipelines.predict.nodes import predict_new_photos
from tests.ray_cluster import RayCluster, ray_cluster  # noqa: F401 - the fixture

ASSETS = Path(__import__("ultralytics").__file__).parent / "assets"
N_PHOTOS = 40
BATCH = 2  # 20 batches: the second node is lost with most of them still to predict
PREDICT = PredictParams(runtime="torch", imgsz=320, slicing="never", batch=2)


@pytest.fixture(scope="module")
def model_info(coco_model, tmp_path_factory: pytest.TempPathFactory) -> dict:
    weights = tmp_path_factory.mktemp("model") / "yolov8n.pt"
    shutil.copy(coco_model.ckpt_path, weights)
    choice = ModelChoice.of_checkpoint(weights, PREDICT, threshold=0.25, source="test")
    return choice.model_dump(mode="json")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Photos:
    """40 photos of 96 to 160 px: crops of Ultralytics' two sample photos (people, a bus), some
    mirrored, in sub-folders, PNG and JPEG, so the COCO model finds a different count in many."""
    root = tmp_path_factory.mktemp("photos")
    sources = [Image.open(ASSETS / name).convert("RGB") for name in ("bus.jpg", "zidane.jpg")]
    for i in range(N_PHOTOS):
        image = sources[i % 2]
        w, h = image.size
        share = 0.6 + 0.4 * ((i * 7) % 5) / 4  # 60 % to 100 % of the photo
        box = (int((w - w * share) * (i % 3) / 2), int((h - h * share) * (i % 4) / 3))
        crop = image.crop((*box, box[0] + int(w * share), box[1] + int(h * share)))
        side = (96, 128, 160)[i % 3]
        crop = crop.resize((side, max(32, round(side * crop.height / crop.width))))
        if i % 5 == 0:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        path = root / f"set{i % 2}" / f"photo_{i:02d}.{'png' if i % 4 else 'jpg'}"
        path.parent.mkdir(exist_ok=True)
        crop.save(path)
    photos = sorted(root.rglob("photo_*"))
    return Photos(root=root, photos=photos, unsupported=[], not_photos=[], other=[])


def _settings(tmp_path: Path, **predict) -> DistributedParams:
    return DistributedParams(predict={"parts": str(tmp_path / "parts"), "batch_photos": BATCH, **predict})


def _counts(lesions: pd.DataFrame, table: pd.DataFrame) -> pd.Series:
    return lesions.groupby("image").size().reindex(table.photo, fill_value=0)


@pytest.fixture(scope="module")
def one_process(folder: Photos, model_info: dict, tmp_path_factory: pytest.TempPathFactory):
    """The folder predicted in this process: what the Ray runs must reconcile with."""
    lesions, table = predict_new_photos(
        folder, model_info, PREDICT, _settings(tmp_path_factory.mktemp("local"), engine="local")
    )
    return lesions, table


def test_a_small_folder_is_predicted_in_one_process_by_default(
    folder: Photos, model_info: dict, one_process, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    started = []
    monkeypatch.setattr(nodes, "ray_session", lambda *a, **k: started.append(a))
    settings = DistributedParams(predict={"parts": str(tmp_path / "parts"), "batch_photos": BATCH})
    assert settings.predict.engine == "auto" and N_PHOTOS < settings.predict.min_photos
    lesions, table = predict_new_photos(folder, model_info, PREDICT, settings)
    assert not started and set(table.node) == {""}  # no Ray: every photo predicted here
    assert len(table) == N_PHOTOS and set(table.status) == {"predicted"}
    assert _counts(lesions, table).tolist() == _counts(*one_process).tolist()
    assert _counts(*one_process).nunique() >= 3  # the photos differ: the comparison can catch a shuffle


def test_a_stopped_run_resumes_without_predicting_its_finished_photos_again(
    folder: Photos, model_info: dict, one_process, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tmp_path, engine="local")
    predicted: list[str] = []
    real = batch.predict_batch

    def stopping(predictor, photos, **kwargs):
        if len(predicted) >= 6:
            raise KeyboardInterrupt  # Ctrl-C after three batches
        predicted.extend(key for key, _, _ in photos)
        return real(predictor, photos, **kwargs)

    monkeypatch.setattr(batch, "predict_batch", stopping)
    with pytest.raises(KeyboardInterrupt):
        predict_new_photos(folder, model_info, PREDICT, settings)
    assert len(list((tmp_path / "parts").glob("part-*.json"))) == 3
    first = list(predicted)
    predicted.clear()
    monkeypatch.setattr(
        batch,
        "predict_batch",
        lambda predictor, photos, **kw: predicted.extend(key for key, _, _ in photos) or real(predictor, photos, **kw),
    )
    lesions, table = predict_new_photos(folder, model_info, PREDICT, settings)
    assert not set(first) & set(predicted) and len(first) + len(predicted) == N_PHOTOS  # none predicted twice
    assert _counts(lesions, table).tolist() == _counts(*one_process).tolist()
    pd.testing.assert_frame_equal(
        lesions.sort_values(["image", "x_min", "y_min"], ignore_index=True),
        one_process[0].sort_values(["image", "x_min", "y_min"], ignore_index=True),
    )
    # another threshold is another prediction: the kept batches are not used for it
    other = {**model_info, "threshold": 0.5}
    predicted.clear()
    predict_new_photos(folder, other, PREDICT, settings)
    assert len(predicted) == N_PHOTOS


def _model_copies() -> set[Path]:
    """The folders of the actors' copies of the model (``BatchPredictor``'s) in this machine's temporary folder."""
    return set(Path(tempfile.gettempdir()).glob("acne-batch-*"))


def test_prediction_on_a_two_node_cluster_reconciles_with_one_process(
    ray_cluster: RayCluster,  # noqa: F811
    folder: Photos,
    model_info: dict,
    one_process,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RAY_ADDRESS", ray_cluster.address)
    both = {ray_cluster.head_id, ray_cluster.second_id}
    # Work starts with the first actor ready (by design: a lost node's actor must not hold the others up),
    # so on a loaded machine the head's actor can predict all 20 batches while the second node's is still
    # loading the model (seen once in a full suite). Each run must reconcile; one of three must use both nodes.
    nodes_seen: list[set[str]] = []
    for attempt in range(3):
        before = _model_copies()
        lesions, table = predict_new_photos(
            folder, model_info, PREDICT, _settings(tmp_path / f"run{attempt}", engine="ray", actors=2)
        )
        assert _model_copies() <= before  # each actor removed its copy of the model before it was stopped
        assert set(table.node) <= both  # predicted on the cluster's nodes, by its actors
        assert table.photo.is_unique and len(table) == N_PHOTOS and set(table.status) == {"predicted"}
        assert _counts(lesions, table).tolist() == _counts(*one_process).tolist()
        parts = tmp_path / f"run{attempt}" / "parts"
        kept = [row for part in parts.glob("part-*.json") for row in json.loads(part.read_text())]
        assert sorted(r["photo"] for r in kept) == sorted(table.photo)  # each batch kept once, with its node
        assert {r["node"] for r in kept} == set(table.node)
        nodes_seen.append(set(table.node))
        if set(table.node) == both:
            break
    assert nodes_seen[-1] == both, f"three runs, none on both nodes: {nodes_seen}"  # both nodes predicted


def test_a_node_lost_midway_loses_no_photo_and_doubles_none(
    ray_cluster: RayCluster,  # noqa: F811
    folder: Photos,
    model_info: dict,
    one_process,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RAY_ADDRESS", ray_cluster.address)
    settings = _settings(tmp_path, engine="ray", actors=2)
    parts, second = tmp_path / "parts", ray_cluster.second_id
    killed_after: list[int] = []
    before = _model_copies()

    def kill_once_the_second_node_finished_a_batch() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            held = [json.loads(p.read_text()) for p in parts.glob("part-*.json")]
            if any(row["node"] == second for rows in held for row in rows):
                ray_cluster.kill_second()
                killed_after.append(sum(len(rows) for rows in held))
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=kill_once_the_second_node_finished_a_batch, daemon=True)
    watcher.start()
    try:
        lesions, table = predict_new_photos(folder, model_info, PREDICT, settings)
        watcher.join(timeout=10)
        # lost before the end: photos were still to predict. How many depends on when the second node's
        # actor started (a loaded CI machine saw 22 of 40 done by the head alone first), so no more is asserted
        assert killed_after and killed_after[0] < N_PHOTOS
        # the loss is seen by the driver (a new attempt, logged) when the node held a batch; when its
        # actor was between batches, Ray Data drops it and the actors left take the rest (a random-order
        # CI run saw this): either way no photo is lost and none doubled, which the lines below check
        assert table.photo.is_unique and len(table) == N_PHOTOS and set(table.status) == {"predicted"}
        assert _counts(lesions, table).tolist() == _counts(*one_process).tolist()
        assert second in set(table.node) and ray_cluster.head_id in set(table.node)
    finally:
        watcher.join(timeout=60)
        ray_cluster.start_second()  # the next test finds two nodes again
        # the killed node's actor never removed its copy of the model: on a real cluster it went with that
        # node's disk (or its reboot); here both nodes share this machine's, so the test removes it
        for leftover in _model_copies() - before:
            shutil.rmtree(leftover, ignore_errors=True)


def test_auto_uses_ray_only_where_more_than_this_machine_is_there_and_the_folder_is_large(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On one machine without GPUs one process is as fast as Ray's actors and skips Ray's start
    (benchmarks/RESULTS.md): ``auto`` goes to Ray for a named cluster or several GPUs, from
    ``min_photos`` photos on."""
    from acne_detection.core.params import BatchPredictParams

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(nodes, "_gpus_here", lambda: 0)
    auto = BatchPredictParams()
    many, few, cluster = auto.min_photos, auto.min_photos - 1, "10.0.0.5:6379"
    assert nodes._engine(auto, many) == "local"  # this machine alone
    assert nodes._engine(auto, few, cluster) == "local"  # too few photos to pay Ray's start back
    assert nodes._engine(auto, many, cluster) == "ray"
    monkeypatch.setenv("RAY_ADDRESS", cluster)
    assert nodes._engine(auto, many) == "ray"
    monkeypatch.delenv("RAY_ADDRESS")
    monkeypatch.setattr(nodes, "_gpus_here", lambda: 2)
    assert nodes._engine(auto, many) == "ray"  # an actor per GPU
    assert nodes._engine(BatchPredictParams(engine="local"), 10**6, cluster) == "local"
    assert nodes._engine(BatchPredictParams(engine="ray"), 1) == "ray"
