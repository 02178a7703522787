"""Batch prediction: a folder's photos through the deployed model, a batch at a time, in this
process or on Ray Data's pool of actors, each actor holding the same ``Predictor``.

Both engines answer in the same rows (``predict_batch``: one per photo, its boxes, its grade
classifier's scores, the Ray node that predicted it, and the reason where it failed) and hand each
finished batch to the caller, who keeps it (``PartsFolder``: a part file per batch, keyed by
photo). A run stopped midway is resumed by predicting only the photos no part holds; a Ray worker
lost midway costs its batch, which the next attempt predicts again (``predict_on_ray``), and each
photo is kept once.

Ray is imported only by ``predict_on_ray`` and the actor: without the ``ray`` extra, this module
and the one-process engine work as they are. The Ray session (local instance or cluster) is the
caller's (``framework.distributed.ray_session``); ``model/`` imports no framework.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import tarfile
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from acne_detection.core.inference import PREDICTION_COLUMNS
from acne_detection.core.params import PredictParams
from acne_detection.core.runtimes import export_runtime, runtime_entry
from acne_detection.model.predictor import Predictor
from acne_detection.model.record import ModelRecord

logger = logging.getLogger(__name__)
PART_PREFIX = "part-"
FINGERPRINT_FILE = "fingerprint.json"
# what a row of a batch holds, in a part file and between Ray's stages (boxes as JSON text)
ROW_KEYS = ("photo", "stamp", "node", "counted", "candidates", "scores", "error")
NODE_DEATH_WAIT_S = 60  # Ray declares a lost node dead within about 30 s (its health checks)


@dataclass(frozen=True)
class PhotoJob:
    """One photo to predict.

    Attributes:
        key: its path in the folder (``a/b.jpg``): what every table names it by.
        path: where this process reads it.
        stamp: its size and modification time: a photo replaced under the same name is predicted again.
    """

    key: str
    path: str
    stamp: str

    @classmethod
    def of(cls, key: str, path: Path) -> PhotoJob:
        stat = Path(path).stat()
        return cls(key=key, path=str(path), stamp=f"{stat.st_size}:{stat.st_mtime_ns}")


def predict_batch(predictor: Predictor, photos: list[tuple[str, Any, str]], *, node: str = "") -> list[dict[str, Any]]:
    """Predict a batch: one row per photo.

    A batch that fails is predicted again photo by photo, so that one bad photo fails alone, with
    its reason, and its neighbours are kept.

    Args:
        predictor: the deployed model.
        photos: ``(key, source, stamp)``; the source is a path or the file's bytes.
        node: the Ray node predicting (``""``: this process).

    Returns:
        ``ROW_KEYS`` per photo, in input order: ``counted`` and ``candidates`` are the
        ``inference.PREDICTION_COLUMNS`` rows (JSON), ``scores`` the grade classifier's (JSON,
        ``null`` when the grade model reads none), ``error`` empty unless the photo failed.
    """
    try:
        return _predicted(predictor, photos, node)
    except Exception:  # noqa: BLE001 - one photo's failure must not take its batch with it
        if len(photos) == 1:
            key, _, stamp = photos[0]
            import traceback

            reason = traceback.format_exc(limit=1).strip().splitlines()[-1]
            logger.warning("Predicting %s failed: %s", key, reason)
            return [{**_empty_row(key, stamp, node), "error": reason}]
        return [row for photo in photos for row in predict_batch(predictor, [photo], node=node)]


def _predicted(predictor: Predictor, photos: list[tuple[str, Any, str]], node: str) -> list[dict[str, Any]]:
    keyed = [(key, source) for key, source, _ in photos]
    found = {b.key: b for b in predictor.boxes(keyed)}
    scores = predictor.scores(keyed)
    rows = []
    for key, _, stamp in photos:
        boxes = found[key]
        rows.append(
            {
                **_empty_row(key, stamp, node),
                "counted": _to_json(boxes.counted),
                "candidates": _to_json(boxes.candidates),
                "scores": json.dumps(scores.loc[key].to_dict()) if scores is not None else "null",
            }
        )
    return rows


def _empty_row(key: str, stamp: str, node: str) -> dict[str, Any]:
    empty = {"counted": "[]", "candidates": "[]", "scores": "null", "error": ""}
    return {"photo": key, "stamp": stamp, "node": node, **empty}


def _to_json(table: pd.DataFrame) -> str:
    """Boxes as JSON rows, numbers exact (Python's shortest repr round-trips every float)."""
    rows = table[PREDICTION_COLUMNS].itertuples(index=False)
    return json.dumps([[v.item() if hasattr(v, "item") else v for v in row] for row in rows])


def boxes_of(row: dict[str, Any], field: str) -> pd.DataFrame:
    """A row's ``counted`` or ``candidates`` as an ``inference.PREDICTION_COLUMNS`` table."""
    table = pd.DataFrame(json.loads(row[field]), columns=PREDICTION_COLUMNS)
    if not len(table):
        return table
    return table.astype({"class_id": int, **{c: float for c in PREDICTION_COLUMNS[3:]}})


def predict_in_process(
    predictor: Predictor,
    photos: list[PhotoJob],
    *,
    batch_photos: int,
    on_batch: Callable[[list[dict[str, Any]]], None],
) -> None:
    """The one-process engine: ``batch_photos`` photos at a time, each batch handed to ``on_batch``."""
    for start in range(0, len(photos), batch_photos):
        chunk = photos[start : start + batch_photos]
        on_batch(predict_batch(predictor, [(p.key, p.path, p.stamp) for p in chunk]))


class PartsFolder:
    """The finished batches of a prediction, one JSON file each, so that a stopped run resumes.

    The folder belongs to one model and its settings (``fingerprint``): parts made by another
    model, threshold or setting are removed when it is opened, saying so. A photo counts as
    finished when a part holds its key with its current stamp; a photo held twice (a batch kept
    before its worker was lost, then predicted again) is taken once.

    Args:
        path: the folder (made when missing).
        fingerprint: what the predictions depend on (the model, its threshold, predict's settings).
    """

    def __init__(self, path: Path | str, fingerprint: dict[str, Any]) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        stored = self.path / FINGERPRINT_FILE
        text = json.dumps(fingerprint, sort_keys=True, default=str)
        if stored.exists() and stored.read_text(encoding="utf-8") != text:
            old = sorted(self.path.glob(f"{PART_PREFIX}*.json"))
            for part in old:
                part.unlink()
            if old:
                logger.info("%s: %d finished batches of another model or settings removed", self.path, len(old))
        stored.write_text(text, encoding="utf-8")

    def finished(self, photos: Iterable[PhotoJob]) -> dict[str, dict[str, Any]]:
        """The rows the parts hold for ``photos`` (by key, stamps matching), first one kept."""
        wanted = {p.key: p.stamp for p in photos}
        rows: dict[str, dict[str, Any]] = {}
        for part in sorted(self.path.glob(f"{PART_PREFIX}*.json")):
            try:
                held = json.loads(part.read_text(encoding="utf-8"))
            except (OSError, ValueError):  # a part cut short when the run stopped: predicted again
                continue
            for row in held:
                if wanted.get(row["photo"]) == row["stamp"]:
                    rows.setdefault(row["photo"], row)
        return rows

    def add(self, rows: list[dict[str, Any]]) -> Path:
        """Keep a finished batch (written whole or not at all)."""
        name = hashlib.sha1("\n".join(sorted(r["photo"] for r in rows)).encode()).hexdigest()[:16]
        target = self.path / f"{PART_PREFIX}{name}.json"
        partial = target.with_suffix(".tmp")
        partial.write_text(json.dumps([{k: r[k] for k in ROW_KEYS} for r in rows]), encoding="utf-8")
        os.replace(partial, target)
        return target


@dataclass(frozen=True)
class ModelFiles:
    """A loaded ``Predictor`` as bytes, for an actor on any machine to load the same model:
    the record, the settings (runtime and size as the driver resolved them), the threshold, the
    checkpoint, the runtime's export (made once, by the driver) and the grade classifier."""

    record: str
    params: str
    threshold: float
    files: dict[str, bytes]

    @classmethod
    def of(cls, predictor: Predictor, checkpoint: Path, params: PredictParams, classifier: str | None) -> ModelFiles:
        """The files ``predictor`` was loaded from (``Predictor.load``'s arguments)."""
        resolved = params.model_copy(update={"runtime": predictor.runtime, "imgsz": predictor.settings.imgsz})
        files = {"checkpoint": Path(checkpoint).read_bytes()}
        if runtime_entry(predictor.runtime).format is not None:
            files["exported"] = _tar(export_runtime(Path(checkpoint), predictor.runtime, predictor.settings.imgsz))
        if classifier and predictor.classifier is not None:
            files["classifier"] = Path(classifier).read_bytes()
        return cls(predictor.record.to_json(), resolved.model_dump_json(), predictor.threshold, files)

    def load(self, folder: Path) -> Predictor:
        """The ``Predictor``, its files written under ``folder``, on this machine's accelerator."""
        from acne_detection.core.accelerator import detect_device

        params = PredictParams.model_validate_json(self.params)
        checkpoint = folder / "model.pt"
        checkpoint.write_bytes(self.files["checkpoint"])
        exported = None
        if "exported" in self.files:
            with tarfile.open(fileobj=io.BytesIO(self.files["exported"])) as tar:
                tar.extractall(folder / "exported", filter="data")
            exported = next((folder / "exported").iterdir())
        classifier = None
        if "classifier" in self.files:
            classifier = folder / "classifier.pt"
            classifier.write_bytes(self.files["classifier"])
        return Predictor.load(
            ModelRecord.from_json(self.record),
            checkpoint,
            params,
            threshold=self.threshold,
            device=detect_device(params.device)[0],
            exported=exported,
            classifier=classifier,
        )


def _tar(path: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(path, arcname=path.name)
    return buffer.getvalue()


class BatchPredictor:
    """A Ray Data actor: the deployed model loaded once, then batch after batch of photos.

    Args:
        model: the ``ModelFiles`` of the driver's ``Predictor``.
        roll: the attempt's ``_Roll``, which this actor joins first thing, for the driver to stop it.
    """

    def __init__(self, model: ModelFiles, roll: Any = None) -> None:
        import ray

        self.node = ray.get_runtime_context().get_node_id()
        self._folder = Path(tempfile.mkdtemp(prefix="acne-batch-"))
        if roll is not None:
            roll.join.remote(ray.get_runtime_context().current_actor, self.node, str(self._folder))
        self.predictor = model.load(self._folder)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        """``photo``, ``stamp`` and ``data`` (the file's bytes) in; ``ROW_KEYS`` out. Each photo
        is written to a file of its own suffix first, so this actor reads it exactly as the
        one-process engine reads the folder's file (same decoder, same answer)."""
        with tempfile.TemporaryDirectory(dir=self._folder) as tmp:
            photos = []
            for i, row in enumerate(batch.itertuples(index=False)):
                path = Path(tmp) / f"{i}{Path(row.photo).suffix}"
                path.write_bytes(row.data)
                photos.append((row.photo, str(path), row.stamp))
            return pd.DataFrame(predict_batch(self.predictor, photos, node=self.node), columns=list(ROW_KEYS))


class _Roll:
    """The actors of one attempt, as a Ray actor on the driver's node: Ray Data lets go of a
    failed dataset's actors by reference counting, not ``ray.kill``, and one still holding its
    CPUs would keep the next attempt's pool from starting; the driver stops them all through it.
    Each actor also names its node and the folder of its model's copy, which the driver removes
    afterwards (``ray.kill`` runs no finaliser)."""

    def __init__(self) -> None:
        self.actors: list[tuple[Any, str, str]] = []

    def join(self, actor: Any, node: str, folder: str) -> None:
        self.actors.append((actor, node, folder))

    def members(self) -> list[tuple[Any, str, str]]:
        return self.actors


@contextmanager
def _attempt_roll(here: str) -> Iterator[Any]:
    """A ``_Roll`` for an attempt; on leaving, every actor that joined it, and the roll, stopped."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    roll = (
        ray.remote(_Roll)
        .options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False))
        .remote()
    )
    try:
        yield roll
    finally:
        members = ray.get(roll.members.remote(), timeout=60)
        for actor, _, _ in members:
            ray.kill(actor)  # an actor already gone is no error
        ray.kill(roll)
        remove = ray.remote(num_cpus=0)(shutil.rmtree)
        removing = [
            remove.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(folder, True)
            for _, node, folder in members
        ]
        for done in ray.wait(removing, num_returns=len(removing), timeout=30)[0] if removing else []:
            with suppress(Exception):  # a node lost midway: its folders went with it, or wait for its return
                ray.get(done)


def _read_photos(batch: pd.DataFrame) -> pd.DataFrame:
    """The photos' bytes, read where the folder is (the driver's node)."""
    return batch.assign(data=[Path(p).read_bytes() for p in batch.path]).drop(columns="path")


def predict_on_ray(
    model: ModelFiles,
    photos: list[PhotoJob],
    *,
    actors: int | None,
    batch_photos: int,
    cpus_per_actor: float = 1,
    gpus_per_actor: float = 0,
    attempts: int = 3,
    finished: Callable[[], set[str]],
    on_batch: Callable[[list[dict[str, Any]]], None],
) -> None:
    """The Ray engine, inside the caller's Ray session: the photos streamed through a pool of
    ``BatchPredictor`` actors, ``batch_photos`` per call, each finished batch handed to ``on_batch``.

    The photos are read on the driver's node and travel as bytes (no folder shared between
    machines needed); the model travels as ``ModelFiles``. Each attempt sizes the pool to the
    nodes alive then (``actors_that_fit``). When a worker is lost, the attempt stops; once Ray
    has declared the lost node dead, the next one predicts the photos ``finished()`` does not name
    yet, on the nodes still there, up to ``attempts`` times.

    Args:
        model: the driver's ``Predictor`` as files.
        photos: the photos to predict.
        actors: the pool's size (``None``: as many as fit); never more than fit, nor than batches.
        batch_photos: photos per actor call (a batch).
        cpus_per_actor: CPUs each actor holds.
        gpus_per_actor: GPUs each actor holds (0.5: two share one).
        attempts: attempts in all.
        finished: the keys finished so far (kept batches included).
        on_batch: called with each finished batch's rows (``predict_batch``'s), in the driver.

    Raises:
        ray.exceptions.RayError: a worker was still lost on the last attempt.
    """
    import ray

    for attempt in range(1, attempts + 1):
        done = finished()
        todo = [p for p in photos if p.key not in done]
        if not todo:
            return
        nodes = _alive_nodes()
        fit = actors_that_fit(cpus_per_actor, gpus_per_actor)
        size = max(1, min(actors or fit, fit, -(-len(todo) // batch_photos)))
        logger.info("Ray attempt %d: %d photos, %d actors on %d nodes", attempt, len(todo), size, len(nodes))
        try:
            for rows in _ray_batches(model, todo, size, batch_photos, cpus_per_actor, gpus_per_actor):
                on_batch(rows)
            return
        except ray.exceptions.RayError as err:
            if attempt == attempts or not _worker_lost(err):
                raise
            logger.warning(
                "A Ray worker was lost (%s); attempt %d of %d predicts the photos not finished yet",
                type(err).__name__,
                attempt + 1,
                attempts,
            )
        _wait_for_the_cluster_to_notice(nodes, cpus_per_actor)


def _alive_nodes() -> dict[str, dict[str, float]]:
    """The resources of each node alive now, by node id."""
    import ray

    return {n["NodeID"]: n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")}


def _wait_for_the_cluster_to_notice(before: dict[str, dict[str, float]], cpus_per_actor: float) -> None:
    """After a lost worker, before the next attempt, ``NODE_DEATH_WAIT_S`` at most for each:

    - until Ray declares a node of ``before`` dead (its health checks take seconds), so that the
      next attempt places no actor there (a worker lost on a node that lives on waits it out);
    - until the CPUs the failed attempt's actors held (stopped by ``_attempt_roll``) are free
      again, so that the next pool is not left waiting for them.
    """
    import ray

    deadline = time.monotonic() + NODE_DEATH_WAIT_S
    while time.monotonic() < deadline and set(before) <= set(_alive_nodes()):
        time.sleep(0.5)
    deadline = time.monotonic() + NODE_DEATH_WAIT_S
    while time.monotonic() < deadline and ray.available_resources().get("CPU", 0.0) < cpus_per_actor:
        time.sleep(0.5)


def actors_that_fit(cpus_per_actor: float, gpus_per_actor: float = 0) -> int:
    """How many actors of these resources the nodes alive now hold, at least 1 (inside a Ray session)."""
    fit = 0
    for resources in _alive_nodes().values():  # an actor holds its resources on one node
        held = [resources.get("CPU", 0.0) / cpus_per_actor]
        if gpus_per_actor:
            held.append(resources.get("GPU", 0.0) / gpus_per_actor)
        fit += int(min(held) + 1e-9)
    return max(1, fit)


def _ray_batches(
    model: ModelFiles, photos: list[PhotoJob], actors: int, batch_photos: int, cpus: float, gpus: float
) -> Iterator[list[dict[str, Any]]]:
    import ray

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the caller shows its own, per photo
    here = ray.get_runtime_context().get_node_id()
    # one block per batch, the one-process engine's batches: the same photos share a forward pass.
    # from_blocks puts them from here (from_pandas would run a task, needing a CPU the actors may hold)
    blocks = [
        pd.DataFrame([{"photo": p.key, "path": p.path, "stamp": p.stamp} for p in photos[i : i + batch_photos]])
        for i in range(0, len(photos), batch_photos)
    ]
    with _attempt_roll(here) as roll:
        with warnings.catch_warnings():
            # max_restarts has no named parameter in Ray Data 2.60 (RayDeprecationWarning): without
            # it a lost actor would wait for room to restart in, which a full cluster never has
            warnings.filterwarnings("ignore", message=".*ray_remote_args. is deprecated")
            dataset = (
                ray.data.from_blocks(blocks)
                .map_batches(
                    _read_photos,
                    batch_format="pandas",
                    batch_size=None,
                    num_cpus=0,
                    concurrency=2,
                    label_selector={"ray.io/node-id": here},  # where the folder is
                )
                .map_batches(
                    BatchPredictor,
                    fn_constructor_kwargs={"model": model, "roll": roll},
                    batch_format="pandas",
                    batch_size=None,
                    # all started at once; work starts with the first ready, and one that cannot start
                    # (its node lost) does not hold the others up. One batch queued per actor: the
                    # first ready does not take every batch while the others load the model.
                    compute=ray.data.ActorPoolStrategy(
                        min_size=1, max_size=actors, initial_size=actors, max_tasks_in_flight_per_actor=1
                    ),
                    num_cpus=cpus,
                    num_gpus=gpus,
                    max_restarts=0,  # a lost actor stops the attempt; the next one starts on the nodes still there
                )
            )
        for batch in dataset.iter_batches(batch_size=None, batch_format="pandas"):
            yield batch.to_dict(orient="records")


def _worker_lost(err: BaseException) -> bool:
    """Whether ``err`` (or what caused it) says a worker, actor, node or object was lost."""
    import ray

    lost = (
        ray.exceptions.RayActorError,
        ray.exceptions.WorkerCrashedError,
        ray.exceptions.NodeDiedError,
        ray.exceptions.ObjectLostError,
        ray.exceptions.OwnerDiedError,
    )
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, lost):
            return True
        seen = seen.__cause__ or seen.__context__
    return "died" in str(err).lower() or "lost" in str(err).lower()
