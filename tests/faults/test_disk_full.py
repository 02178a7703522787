"""The disk fills under a run: the project's ``data/`` folder (models, the SQLite tracking store and
its artifacts, Ultralytics' run folder) is a size-limited tmpfs. A good ``kedro run`` first; then a
file fills the disk but for a few MiB, and ``kedro run`` again: the data and preview stages fit,
training's checkpoints (about 10 MiB each) do not. The run stops with an error that names the file
and the space it needed (``hooks.RunFailure``), its MLflow run is FAILED with that reason, and the
previous model, its registered version and its threshold are untouched. Once the filler is
deleted, the same ``kedro run`` succeeds, with no cleaning up in between.

The cheaper tests below break single writes on a 1 MiB tmpfs: a checkpoint written whole
(``pathlib``), the weights copied over the previous ones (``WeightsFile``), the SQLite store.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from acne_detection.core.files import sha256_of
from acne_detection.datasets import PretrainedWeightsSource, WeightsFile
from acne_detection.framework.full_disk import find_full_disk, remove_half_written
from acne_detection.testing import PROJECT_ROOT, copy_project
from tests.conftest import kedro_run, tree_digest

MiB = 1 << 20
TINY = "train.epochs=1,train.imgsz=64,train.batch=8,preview.samples=4,preview.loss_samples=8"
DISK = 128 * MiB  # the project's data/ folder; a good tiny run fills about 53 MiB of it
LEFT = 5 * MiB  # free once filled: data and preview write about 1.2 MiB, a training checkpoint about 10 MiB
# what RunFailure adds to the error: "writing PATH (9.8 MiB needed, 6.4 MiB written); 0 B free of 128.0 MiB on MOUNT."
EXPLAINED = re.compile(
    r"No space left on device writing (?P<path>\S+) \((?P<wanted>[\d.]+ \w+) needed, (?P<written>[\d.]+ \w+) "
    r"written\); (?P<free>[\d.]+ \w+) free of (?P<total>[\d.]+ \w+) on (?P<mount>\S+)\. "
)


def _bytes(size: str) -> float:
    number, unit = size.split()
    return float(number) * {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}[unit]


@contextlib.contextmanager
def _tmpfs(folder: Path, size: int) -> Iterator[Path]:
    """``folder`` as a tmpfs of ``size`` bytes while the block runs; unmounted after, even on failure."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True
    )
    if mounted.returncode:
        reason = f"cannot mount a tmpfs at {folder} (root and mount(8) are needed): {mounted.stderr.strip()}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(folder)], check=False)  # still busy: detach it now, freed when let go


def _fill(folder: Path, *, leave: int) -> int:
    """Fill ``folder``'s filesystem but for ``leave`` bytes with one file; returns the bytes left free."""
    with (folder / "filler").open("wb") as f:
        os.posix_fallocate(f.fileno(), 0, shutil.disk_usage(folder).free - leave)
    return shutil.disk_usage(folder).free


def _registry(client: MlflowClient) -> list[tuple[str, dict[str, str], str]]:
    versions = client.search_model_versions("name='acne-detector'")
    return sorted((v.version, dict(v.tags), v.source) for v in versions)


def _runs(client: MlflowClient) -> list:
    experiment = client.get_experiment_by_name("acne_detection")
    return client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the project on 12 synthetic 64 px photos, the COCO weights found outside data/."""
    base = yaml.safe_load((PROJECT_ROOT / "conf" / "base" / "catalog.yml").read_text())["pretrained_weights"]
    source = PretrainedWeightsSource(**{**{k: v for k, v in base.items() if k != "type"}, "try_download": False})
    cached, _ = replace(source.load(), cache=tmp_path / "weights" / "yolov8n.pt").resolve()
    return copy_project(
        tmp_path / "acne-detection", n_images=12, size=64, catalog={"pretrained_weights": {"local_path": str(cached)}}
    )


@pytest.mark.e2e
def test_a_full_disk_keeps_the_previous_model_and_the_next_run_succeeds(project: Path) -> None:
    data = project / "data"
    with _tmpfs(data, DISK):
        client = MlflowClient(tracking_uri=f"sqlite:///{data / 'mlflow' / 'mlflow.db'}")
        start = time.monotonic()
        good = kedro_run(project, "--params", TINY)
        good_s = time.monotonic() - start
        assert good.returncode == 0, good.stderr[-3000:]
        models = data / "06_models"
        kept = {p: h for p, h in tree_digest(models).items() if not p.startswith("ultralytics/")}
        registered = tree_digest(data / "mlflow" / "artifacts" / "models")  # the registered version's files
        registry = _registry(client)
        record = json.loads((models / "model_record.json").read_text())
        ((_, tags, _),) = registry
        assert float(tags["operating_threshold"]) == record["threshold"]
        assert tags["model_sha256"] == record["model_sha256"] == sha256_of(models / "acne_yolov8n.pt")

        used = shutil.disk_usage(data).used
        left = _fill(data, leave=LEFT)
        start = time.monotonic()
        full = kedro_run(project, "--params", TINY)
        full_s = time.monotonic() - start
        # the log's and the traceback's wrapping undone, and the log's source column (rich puts it on the first line)
        out = re.sub(r" run_report\.py:\d+ ", " ", " ".join((full.stdout + full.stderr).split()))
        assert full.returncode != 0
        stopped = out[out.index("The run stopped: ") :][:1500] if "The run stopped: " in out else out[-3000:]
        said = EXPLAINED.match(stopped, len("The run stopped: [Errno 28] "))
        assert said, stopped
        assert Path(said["path"]).is_relative_to(data) and Path(said["mount"]) == data
        assert _bytes(said["total"]) == DISK
        # the figures explain the failure: the file needed more than what was written plus what was left
        assert _bytes(said["wanted"]) > _bytes(said["written"]) + _bytes(said["free"])
        assert said["path"] in out[-1500:]  # also the traceback's last words, under the error itself
        assert "The half-written file was removed" in stopped and not Path(said["path"]).exists()

        # the previous model, its registered version and its threshold: untouched
        assert {p: h for p, h in tree_digest(models).items() if not p.startswith("ultralytics/")} == kept
        assert tree_digest(data / "mlflow" / "artifacts" / "models") == registered
        assert _registry(client) == registry
        failed = _runs(client)[-1]
        assert failed.info.status == "FAILED"
        assert f"No space left on device writing {said['path']}" in failed.data.tags["failure"]
        assert failed.data.tags["mlflow.note.content"].startswith("**Failed**: [Errno 28] No space left on device")

        (data / "filler").unlink()  # space freed: nothing else is cleaned up
        start = time.monotonic()
        again = kedro_run(project, "--params", TINY)
        again_s = time.monotonic() - start
        assert again.returncode == 0, again.stderr[-3000:]
        assert _runs(client)[-1].info.status == "FINISHED"
        weights = sha256_of(models / "acne_yolov8n.pt")
        assert json.loads((models / "model_record.json").read_text())["model_sha256"] == weights
        assert max(_registry(client))[1]["model_sha256"] == weights  # the new weights are the newest version
        print(
            f"good run {good_s:.1f} s ({used / MiB:.1f} MiB of data/); filled to {left / MiB:.2f} MiB free; "
            f"failed run {full_s:.1f} s: {stopped[: stopped.index('freed).') + 7]}; next run {again_s:.1f} s, "
            f"{shutil.disk_usage(data).used / MiB:.1f} MiB used"
        )


def test_a_checkpoint_cut_short_is_named_measured_and_removed(tmp_path: Path) -> None:
    """``pathlib.write_bytes`` (how Ultralytics writes ``last.pt`` and ``best.pt``) on a full disk:
    Python's error names no file; the explanation finds it, and what it wanted."""
    with _tmpfs(tmp_path / "disk", MiB) as disk:
        checkpoint = disk / "weights" / "last.pt"
        checkpoint.parent.mkdir()
        with pytest.raises(OSError) as raised:
            checkpoint.write_bytes(os.urandom(3 * MiB))
        assert raised.value.filename is None  # what Python says: "[Errno 28] No space left on device", no file
        full = find_full_disk(raised.value)
        assert (full.path, full.wanted, full.mount, full.total) == (checkpoint, 3 * MiB, disk, MiB)
        assert full.written + full.free <= MiB and full.shortfall >= 2 * MiB
        assert f"writing {checkpoint} (3.0 MiB needed, " in full.message
        assert remove_half_written(full, inside=tmp_path / "elsewhere") == 0 and checkpoint.exists()
        assert remove_half_written(full, inside=tmp_path) == full.written > 0 and not checkpoint.exists()


def test_weights_copied_onto_a_full_disk_leave_the_previous_ones_whole(tmp_path: Path) -> None:
    new = tmp_path / "new.pt"
    new.write_bytes(os.urandom(2 * MiB))
    with _tmpfs(tmp_path / "disk", MiB) as disk:
        previous = disk / "acne_yolov8n.pt"
        previous.write_bytes(b"the previous model" * 1000)
        with pytest.raises(Exception) as raised:  # noqa: PT011 - Kedro's DatasetError, from the OSError
            WeightsFile(filepath=str(previous)).save(new)
        assert previous.read_bytes() == b"the previous model" * 1000  # the copy went beside it, not over it
        assert sorted(p.name for p in disk.iterdir()) == ["acne_yolov8n.pt"]  # and was removed
        full = find_full_disk(raised.value)
        assert full.path == disk / "acne_yolov8n.pt.part" and full.wanted == 2 * MiB  # the copy's size


def test_a_full_tracking_store_is_named(tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "disk", MiB) as disk:
        store = disk / "mlflow.db"
        with contextlib.closing(sqlite3.connect(store)) as db:
            db.execute("CREATE TABLE metrics (value BLOB)")
            db.commit()
            _fill(disk, leave=0)
            with pytest.raises(sqlite3.OperationalError, match="database or disk is full") as raised:
                db.execute("INSERT INTO metrics VALUES (?)", (os.urandom(64 * 1024),))
                db.commit()
        full = find_full_disk(raised.value, store=store)
        assert full.path == store and full.wanted is None and full.free < 64 * 1024
        assert f"writing {store} (" in full.message
        assert find_full_disk(raised.value) is None  # no store named, no guess
