"""The served model under load, on loopback: how many requests a second ``make serve`` holds,
its latency, its errors and its memory, with bad requests mixed in.

``python -m benchmarks.serve_load`` trains a small model on a copy of the project (24 synthetic
photos, 1 epoch at 416 px: its speed, not its accuracy, matters here), starts ``mlflow models
serve`` on it as ``make serve`` does (``--env-manager local``, 127.0.0.1, ``--workers`` and
``--timeout`` as given), then sends, from ``--clients`` concurrent clients:

1. ``--requests`` requests of one 640 px photo each, every tenth replaced by a bad request
   (not base64, a text file, a truncated JPEG, zero bytes, a decompression bomb, a misspelt
   column, in turn): each good one must get 200 and each bad one 400;
2. ``--phone`` requests of one 3000 x 4000 phone photo each (sliced prediction).

It records requests per second, p50/p95/p99 latency, errors (a good request not answered 200,
a bad one not answered 400, or a time-out) and the resident memory of the server's process
tree before the load, at its peak, and after each of ``--rounds`` repetitions of the whole
load (memory that settles after the first round is the allocator keeping what it used; memory
that grows round after round would be a leak). The row goes into ``benchmarks/RESULTS.md``
through ``benchmarks.run.merge_results``; ``--requests 12 --phone 1 --soak 0`` is the suite's smoke run
(no row written). Then a soak: ``--soak`` more requests of the same mix (default 2,000), the
server's peak memory measured over each 500 (each quarter, when fewer); its row compares the last 500's peak with the
first 500's (flat: within 5 %).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

from acne_detection.testing import copy_project, free_port, write_png_bomb

TRAIN = "train.epochs=1,train.imgsz=416,train.batch=8,preview.samples=4"


def _jpeg(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


def bad_requests(photo: bytes, folder: Path) -> list[dict]:
    """One row of each kind of bad request a user sent (issue: the served model vs bad requests)."""
    b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
    bomb = write_png_bomb(folder / "bomb.png", 30_000).read_bytes()
    return [
        {"image_b64": "@@@ not base64"},
        {"image_b64": b64(b"visit 3, left cheek\n")},
        {"image_b64": b64(photo[: len(photo) // 2])},
        {"image_b64": ""},
        {"image_b64": b64(bomb)},
        {"image_base64": b64(photo)},
    ]


class _Memory:
    """Peak resident memory of a process tree, sampled every 0.2 s in a thread."""

    def __init__(self, pid: int) -> None:
        self._top = psutil.Process(pid)
        self.peak = 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def now(self) -> float:
        tree = [self._top, *self._top.children(recursive=True)]
        total = 0
        for p in tree:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total / 1e6

    def _sample(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, self.now())
            time.sleep(0.2)

    def __enter__(self) -> _Memory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()


def _send(url: str, row: dict, timeout: float) -> tuple[int, float]:
    body = json.dumps({"dataframe_records": [row]}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            answer.read()
            code = answer.status
    except urllib.error.HTTPError as err:
        err.read()
        code = err.code
    except OSError:
        code = 0  # no answer within the client's time-out
    return code, time.perf_counter() - start


def _phase(url: str, rows: list[tuple[dict, int]], clients: int, timeout: float) -> dict:
    """Send rows (each with the status it must get) from ``clients`` threads; the phase's figures."""
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(lambda item: (_send(url, item[0], timeout), item[1]), rows))
    wall = time.perf_counter() - start
    good = [seconds for (code, seconds), expected in answers if expected == 200 and code == 200]
    errors = sum(code != expected for (code, _), expected in answers)
    q = np.percentile(good, [50, 95, 99]) if good else [float("nan")] * 3
    return {
        "requests": len(rows),
        "bad": sum(expected != 200 for _, expected in rows),
        "errors": int(errors),
        "rps": len(rows) / wall,
        "p50": float(q[0]),
        "p95": float(q[1]),
        "p99": float(q[2]),
        "wall": wall,
    }


def _soak(url: str, rows: list[tuple[dict, int]], server_pid: int, clients: int, timeout: float, window: int) -> dict:
    """``rows`` sent ``window`` at a time, the server's peak memory measured over each window."""
    windows = []
    for start in range(0, len(rows), window):
        with _Memory(server_pid) as memory:
            phase = _phase(url, rows[start : start + window], clients, timeout)
        windows.append({**phase, "peak_mb": memory.peak})
    return {
        "requests": len(rows),
        "window": window,
        "errors": sum(w["errors"] for w in windows),
        "peaks_mb": [w["peak_mb"] for w in windows],
        "growth": windows[-1]["peak_mb"] / windows[0]["peak_mb"],
        "p50": float(np.median([w["p50"] for w in windows])),
        "p99": max(w["p99"] for w in windows),
        "rps": len(rows) / sum(w["wall"] for w in windows),
    }


def measure(
    work: Path, *, clients: int, requests: int, phone: int, workers: int, timeout: int, rounds: int, soak: int = 0
) -> dict:
    """Train, serve, load ``rounds`` times, then soak; the results row (the figures of the last
    round) and, with ``soak``, the soak's row (``soak`` requests, memory per 500)."""
    from acne_detection.core.synthetic import render_phone_photo

    project = copy_project(work / "project", n_images=24, size=640)
    kedro = str(Path(sys.executable).parent / "kedro")
    done = subprocess.run([kedro, "run", "--params", TRAIN], cwd=project, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"kedro run failed:\n{done.stdout[-3000:]}")
    port = free_port()
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'data' / 'mlflow' / 'mlflow.db'}",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/acne-detector/1"]
        + ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]
        + ["--workers", str(workers), "--timeout", str(timeout)],
        cwd=work,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/invocations"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2).read()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("mlflow models serve did not start") from None
                time.sleep(0.5)
        rng = np.random.default_rng(0)
        photo = (project / "data" / "01_raw" / "synthetic" / "synthetic_00000.jpg").read_bytes()
        good = {"image_b64": base64.b64encode(photo).decode()}
        phone_photo = _jpeg(render_phone_photo(rng, 3000, 4000, 30)[0])
        phone_row = {"image_b64": base64.b64encode(phone_photo).decode()}
        bad = bad_requests(photo, work)
        memory = _Memory(server.pid)
        for _ in range(clients):  # each worker loads the model on its first request: not counted
            _send(url, good, timeout)
        before = memory.now()
        rows = [(bad[(i // 10) % len(bad)], 400) if i % 10 == 9 else (good, 200) for i in range(requests)]
        after, errors = [], 0
        with memory:
            for _ in range(rounds):  # the same load again: memory that keeps growing would show here
                small = _phase(url, rows, clients, timeout + 5)
                large = _phase(url, [(phone_row, 200)] * phone, clients, timeout + 5)
                after.append(memory.now())
                errors += small["errors"] + large["errors"]
        soaked = None
        if soak:  # the same mix of good and bad 640 px requests, many more of them
            many = [(bad[(i // 10) % len(bad)], 400) if i % 10 == 9 else (good, 200) for i in range(soak)]
            soaked = _soak(url, many, server.pid, clients, timeout + 5, window=min(500, max(1, soak // 4)))
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {
        "benchmark": f"served model under load, {clients} clients on loopback",
        "baseline": "-",
        "baseline_s": None,
        "ours": f"mlflow models serve --workers {workers} --timeout {timeout} (make serve)",
        "ours_s": {"median_s": small["p50"], "min_s": small["p50"], "max_s": small["p99"]},
        "ratio": None,
        "note": (
            f"{small['requests']} requests of a 640 px photo ({small['bad']} of them bad): {small['rps']:.1f} req/s, "
            f"p50/p95/p99 {small['p50']:.2f}/{small['p95']:.2f}/{small['p99']:.2f} s, {small['errors']} errors; "
            f"{large['requests']} phone photos (3000 x 4000, sliced): {large['rps']:.2f} req/s, "
            f"p50/p95/p99 {large['p50']:.1f}/{large['p95']:.1f}/{large['p99']:.1f} s, {large['errors']} errors; "
            f"server memory {before:.0f} MB before, {memory.peak:.0f} MB peak, "
            + ", ".join(f"{m:.0f}" for m in after)
            + f" MB after each of {rounds} rounds ({errors} errors in all)"
        ),
        "phases": {"small": small, "phone": large},
        "memory_before_mb": before,
        "memory_peak_mb": memory.peak,
        "memory_after_mb": after,
        "errors": errors,
        "soak": soaked,
    }


def soak_row(soaked: dict, clients: int) -> dict:
    """The soak's results row: the peak over the last window of requests against the first's."""
    peaks = soaked["peaks_mb"]
    return {
        "benchmark": f"served model soak, {soaked['requests']} requests, {clients} clients on loopback",
        "baseline": f"server memory peak over the first {soaked['window']} requests",
        "baseline_s": None,
        "ours": f"server memory peak over the last {soaked['window']} requests",
        "ours_s": None,
        "ratio": soaked["growth"],
        "note": (
            f"peaks per {soaked['window']} requests {', '.join(f'{p:.0f}' for p in peaks)} MB: "
            f"last/first {soaked['growth']:.3f} "
            f"({'flat, within 5 %' if soaked['growth'] <= 1.05 else 'GROWS more than 5 %'}); "
            f"{soaked['rps']:.1f} req/s, p50 {soaked['p50']:.2f} s, p99 {soaked['p99']:.2f} s, "
            f"{soaked['errors']} errors (every 10th request bad, each answered 400)"
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=200, help="requests of a 640 px photo (every 10th bad)")
    parser.add_argument("--phone", type=int, default=20, help="requests of a 3000 x 4000 phone photo")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes (make serve: 1)")
    parser.add_argument("--timeout", type=int, default=60, help="the server's request time-out, seconds")
    parser.add_argument("--rounds", type=int, default=2, help="the whole load, this many times (memory growth)")
    parser.add_argument("--soak", type=int, default=2000, help="then this many 640 px requests, memory per 500")
    parser.add_argument("--work", type=Path, help="keep the project here (default: a temp folder)")
    args = parser.parse_args()
    keys = ("clients", "requests", "phone", "workers", "timeout", "rounds", "soak")
    settings = {k: getattr(args, k) for k in keys}
    if args.work:
        row = measure(args.work, **settings)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            row = measure(Path(tmp), **settings)
    print(json.dumps({k: row[k] for k in ("benchmark", "ours", "note")}, indent=1))
    if row["soak"]:
        print(json.dumps({k: v for k, v in soak_row(row["soak"], args.clients).items() if k in ("benchmark", "note")}))
    if args.requests >= 100:  # a smoke run measures nothing worth keeping
        from benchmarks.run import merge_results

        rows = [{k: v for k, v in row.items() if k not in ("phases", "soak")}]
        if row["soak"] and row["soak"]["requests"] >= 1000:
            rows.append(soak_row(row["soak"], args.clients))
        merge_results(rows)


if __name__ == "__main__":
    main()
