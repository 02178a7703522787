"""Helpers the tests and the benchmarks share (as ``pandas.testing`` is for pandas): a runnable copy
of this checkout with a synthetic export, a decompression-bomb PNG, a free port on 127.0.0.1, and
the reference computations the project's metrics are held to (random detection tables and
pycocotools' own COCOeval summary, built independently of ``acne_detection.core.metrics``).

Only for a source checkout (``PROJECT_ROOT`` is the folder holding ``src/``); nothing in the
pipelines imports it.
"""

from __future__ import annotations

import contextlib
import io
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a server a test or benchmark starts), below the
    kernel's ephemeral range. A port inside that range (what binding port 0 gives) can be the
    source port the kernel picks for a client connecting to it before the server listens: the
    socket then connects to itself, the readiness poll reads its own request back
    ("BadStatusLine: GET / HTTP/1.1", seen in CI) and the server finds its port taken."""
    import random

    # a generator of its own, from the OS: pytest-randomly seeds the global one alike before every
    # test in every worker, which would hand concurrent tests the same port
    low = _ephemeral_low()
    for port in random.SystemRandom().sample(range(20000, low), min(200, low - 20000)):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free TCP port on 127.0.0.1 between 20000 and {low - 1}")


def _ephemeral_low(default: int = 32768) -> int:
    """The first port of Linux's ephemeral range (``ip_local_port_range``), else the default."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return default
    return low if low > 21000 else default


def stop_process_tree(process: Any, *, timeout: float = 30) -> None:
    """Stop a server a test started, and every process it started in turn (kedro-viz's worker,
    gunicorn's workers): SIGTERM to all of them, then SIGKILL to whatever is left after
    ``timeout``. Stopping only the parent orphans its children, which then outlive the suite.

    Args:
        process: a ``subprocess.Popen`` (or anything with ``pid``).
        timeout: seconds to wait for a clean exit.
    """
    import psutil

    try:
        parent = psutil.Process(process.pid)
        tree = [*parent.children(recursive=True), parent]
    except psutil.NoSuchProcess:
        tree = []
    for member in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.terminate()
    _, alive = psutil.wait_procs(tree, timeout=timeout)
    for member in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    psutil.wait_procs(alive, timeout=timeout)
    if hasattr(process, "wait"):
        with contextlib.suppress(Exception):
            process.wait(timeout=1)  # reap it, so no zombie is left either


def copy_project(root: Path, *, n_images: int, size: int, catalog: dict | None = None) -> Path:
    """A runnable copy of the project in ``root`` whose ``raw_export`` is a small synthetic set.

    Args:
        root: where the copy goes (created).
        n_images: synthetic photographs to generate on first use.
        size: their side in pixels.
        catalog: further ``conf/local/catalog.yml`` entries (merged over base entries).

    Returns:
        ``root``.
    """
    import shutil

    import yaml

    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(PROJECT_ROOT / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    shutil.copytree(PROJECT_ROOT / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", ".telemetry"):
        shutil.copy(PROJECT_ROOT / name, root / name)
    base = yaml.safe_load((PROJECT_ROOT / "conf" / "base" / "catalog.yml").read_text())
    local = {"raw_export": {**base["raw_export"], "synthetic": {"n_images": n_images, "size": size, "seed": 0}}}
    for name, entry in (catalog or {}).items():
        local[name] = {**base.get(name, {}), **entry}
    (root / "conf" / "local").mkdir()
    (root / "conf" / "local" / "catalog.yml").write_text(yaml.safe_dump(local))
    return root


def write_png_bomb(path: Path, side: int) -> Path:
    """A valid grayscale PNG of ``side`` x ``side`` black pixels, streamed so that neither this
    function nor the file (under 1 MB at 30,000 px) ever holds them: a decompression bomb."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    packer = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + one byte per pixel
    data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


_COLS = ["image", "class_id", "x_min", "y_min", "x_max", "y_max"]


def random_detections(n_images: int, n_classes: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    gt_rows, dt_rows = [], []
    for i in range(n_images):
        image = f"img{i}"
        n_gt = 0 if rng.random() < 0.1 else int(rng.integers(1, 8))
        for _ in range(n_gt):
            x, y = rng.uniform(0, 500, 2)
            w, h = rng.uniform(4, 120, 2)
            c = int(rng.integers(n_classes))
            gt_rows.append((image, c, x, y, x + w, y + h))
            if rng.random() < 0.8:  # a detection near it, sometimes of the wrong class
                jitter = rng.normal(0, 0.12, 4) * [w, h, w, h]
                cls = c if rng.random() < 0.85 else int(rng.integers(n_classes))
                dt_rows.append(
                    (
                        image,
                        cls,
                        float(rng.uniform(0.05, 1)),
                        x + jitter[0],
                        y + jitter[1],
                        x + w + jitter[2],
                        y + h + jitter[3],
                    )
                )
        if rng.random() < 0.1:
            continue  # an image with no detection at all
        for _ in range(int(rng.integers(0, 3))):  # false alarms
            x, y = rng.uniform(0, 500, 2)
            dt_rows.append((image, int(rng.integers(n_classes)), float(rng.uniform(0, 0.6)), x, y, x + 30, y + 30))
    gt = pd.DataFrame(gt_rows, columns=_COLS)
    dt = pd.DataFrame(dt_rows, columns=["image", "class_id", "confidence", "x_min", "y_min", "x_max", "y_max"])
    return gt, dt


def pycocotools_summary(gt: pd.DataFrame, dt: pd.DataFrame, images: list[str], n_classes: int) -> np.ndarray:
    """pycocotools' COCOeval ``stats`` (the twelve summary numbers) for these tables."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ids = {name: i for i, name in enumerate(images, 1)}
    coco = COCO()
    coco.dataset = {
        "images": [{"id": i} for i in ids.values()],
        "categories": [{"id": c} for c in range(n_classes)],
        "annotations": [
            {
                "id": k,
                "image_id": ids[r.image],
                "category_id": int(r.class_id),
                "iscrowd": 0,
                "bbox": [r.x_min, r.y_min, r.x_max - r.x_min, r.y_max - r.y_min],
                "area": (r.x_max - r.x_min) * (r.y_max - r.y_min),
            }
            for k, r in enumerate(gt.itertuples(), 1)
        ],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        dets = coco.loadRes(
            [
                {
                    "image_id": ids[r.image],
                    "category_id": int(r.class_id),
                    "score": r.confidence,
                    "bbox": [r.x_min, r.y_min, r.x_max - r.x_min, r.y_max - r.y_min],
                }
                for r in dt.itertuples()
            ]
        )
        ev = COCOeval(coco, dets, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats
