"""``make bench-gpu``: the GPU recipe in one command, against plain ``yolo train`` + ``yolo val``.

Trains the configured export (``--env``, default ``acne04``: point its ``raw_export`` at the
full ACNE04 export) at 640 px with AMP, ``batch: auto`` (Ultralytics' autobatch) and
``cache: ram``, epochs from the configuration, on one GPU; evaluates; then trains and
validates plain Ultralytics on the very same YOLO dataset and settings. Writes
``benchmarks/RESULTS-gpu.md``: images/s, peak GPU memory (nvidia-smi, sampled), epochs to best,
test mAP@50 and mAP@50-95, grading accuracy, and the time ratio against the baseline.

``--architecture`` sets ``train.architecture`` in both runs: ``yolov8n`` (the default) from COCO's
``yolov8n.pt``, ``yolov8n-p2`` with its backbone, ``yolov8s`` from YOLO-World v2's small checkpoint.
Multi-GPU end to end (``train.device: 0,1``) needs two cards: run this with ``--device 0,1``.
Without a CUDA GPU it stops at once and says so.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
import typing
from pathlib import Path

from acne_detection.core.params import TrainParams

ROOT = Path(__file__).resolve().parents[1]
RECIPE = {"imgsz": 640, "batch": "auto", "cache": "ram"}


def _require_gpu() -> str:
    import torch

    if not torch.cuda.is_available():
        sys.exit(
            "make bench-gpu needs an NVIDIA GPU with CUDA, and torch sees none here "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}). Run it on a GPU machine."
        )
    return torch.cuda.get_device_name(0)


class GpuMemory:
    """Peak GPU memory used while a block runs, sampled from nvidia-smi every half second."""

    def __init__(self) -> None:
        self.peak_mb, self._stop = 0.0, threading.Event()

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.split()
            if out:
                self.peak_mb = max(self.peak_mb, max(float(v) for v in out))

    def __enter__(self) -> GpuMemory:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _ours(env: str, device: str, epochs: int | None, architecture: str) -> dict[str, float]:
    params = f"train.imgsz=640,train.batch=auto,train.cache=ram,train.device={device},eval.device={device}"
    params += f",train.architecture={architecture}"
    params += f",train.epochs={epochs}" if epochs else ""
    start = time.perf_counter()
    with GpuMemory() as memory:
        subprocess.run(
            [str(Path(sys.executable).parent / "kedro"), "run", "--env", env, "--params", params], cwd=ROOT, check=True
        )
    wall = time.perf_counter() - start
    reports = ROOT / "data" / "08_reporting"
    summary = json.loads((reports / "training_summary.json").read_text())
    metrics = json.loads((reports / "test_metrics.json").read_text())
    grading = json.loads((reports / "grading_metrics.json").read_text())
    import pandas as pd

    history = pd.read_csv(reports / "training_history.csv")
    speed = float(history["images_per_s"].median()) if "images_per_s" in history else float("nan")
    return {
        "wall_s": wall,
        "gpu_mb": memory.peak_mb,
        "epochs": summary["epochs_run"],
        "best_epoch": summary["best_epoch"],
        "images_per_s": speed,
        "map50": metrics["mAP50"],
        "map50_95": metrics["mAP50-95"],
        "grade_accuracy": grading.get("grade_accuracy", float("nan")),
    }


def _starting_model(architecture: str) -> str:
    """The baseline's model, as the run built it: ``yolov8n.pt`` itself, or the architecture's YAML
    with its checkpoint (the catalog's ``architectures:``, cached by the run) loaded where shapes match."""
    import yaml

    from acne_detection.datasets import PretrainedWeightsSource

    entry = yaml.safe_load((ROOT / "conf" / "base" / "catalog.yml").read_text())["pretrained_weights"]
    weights = PretrainedWeightsSource(**{k: v for k, v in entry.items() if k != "type"}).load()
    cache = ROOT / weights.for_architecture(architecture).cache
    if architecture == "yolov8n":
        return f"YOLO({str(cache)!r})"
    return f"YOLO({architecture + '.yaml'!r}).load({str(cache)!r})"


def _baseline(device: str, epochs: int, train: dict, architecture: str) -> dict[str, float]:
    """Plain Ultralytics on the YOLO dataset the run wrote, same settings, its own validator on test."""
    data = ROOT / "data" / "05_model_input" / "yolo" / "data.yaml"
    work = ROOT / "data" / "06_models" / "bench-gpu-baseline"
    shutil.rmtree(work, ignore_errors=True)
    script = (
        "import json, sys, time\nfrom ultralytics import YOLO\n"
        f"m = {_starting_model(architecture)}\n"
        "t = time.perf_counter()\n"
        f"m.train(data={str(data)!r}, epochs={epochs}, imgsz=640, batch=-1, cache='ram', device={device!r}, "
        f"freeze={train['freeze']}, optimizer={train['optimizer']!r}, lr0={train['lr0']}, nbs={train['nbs']}, "
        f"seed={train['seed']}, project={str(work)!r}, name='train', exist_ok=True, plots=False)\n"
        "r = m.val(data=" + repr(str(data)) + ", split='test', imgsz=640, device=" + repr(device) + ", plots=False)\n"
        "print('RESULT ' + json.dumps({'wall_s': time.perf_counter() - t, 'map50': float(r.box.map50), "
        "'map50_95': float(r.box.map)}))\n"
    )
    with GpuMemory() as memory:
        out = subprocess.run(
            [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
    result = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
    import pandas as pd

    history = pd.read_csv(work / "train" / "results.csv")
    history.columns = [c.strip() for c in history.columns]
    return {
        **result,
        "gpu_mb": memory.peak_mb,
        "epochs": len(history),
        "best_epoch": int(history["metrics/mAP50-95(B)"].idxmax()) + 1,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="acne04", help="the Kedro environment whose raw_export to train on")
    parser.add_argument("--device", default="0", help="CUDA device(s): 0, or 0,1 for two cards (DDP)")
    parser.add_argument("--epochs", type=int, default=None, help="default: train.epochs of the configuration")
    parser.add_argument(
        "--architecture",
        default="yolov8n",
        choices=typing.get_args(TrainParams.model_fields["architecture"].annotation),
        help="train.architecture, for both runs (yolov8s: from YOLO-World v2's small checkpoint)",
    )
    args = parser.parse_args()
    gpu = _require_gpu()
    import yaml

    train = yaml.safe_load((ROOT / "conf" / "base" / "parameters_train.yml").read_text())["train"]
    ours = _ours(args.env, args.device, args.epochs, args.architecture)
    base = _baseline(args.device, ours["epochs"], train, args.architecture)
    rows = [
        ("time, train + test evaluation (s)", base["wall_s"], ours["wall_s"]),
        ("peak GPU memory (MB, nvidia-smi)", base["gpu_mb"], ours["gpu_mb"]),
        (
            "epochs run / epoch of best mAP@50-95",
            f"{base['epochs']} / {base['best_epoch']}",
            f"{ours['epochs']} / {ours['best_epoch']}",
        ),
        ("training images/s (median epoch)", "-", ours["images_per_s"]),
        ("test mAP@50", base["map50"], ours["map50"]),
        ("test mAP@50-95", base["map50_95"], ours["map50_95"]),
        ("grading accuracy (test photos)", "-", ours["grade_accuracy"]),
    ]
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = [
        f"# GPU benchmark ({gpu}, device {args.device}, env {args.env}, {args.architecture})",
        "",
        f"Recipe: {RECIPE}, AMP on, epochs {ours['epochs']}. Baseline: `yolo train` + `yolo val --split test` on the "
        "same YOLO dataset and settings. The baseline's mAP is Ultralytics' own (a continuous PR curve), ours COCO's "
        "(faster-coco-eval): they differ by a few points on the same predictions.",
        "",
        "| measure | yolo train + val | kedro run | ratio |",
        "|---|---|---|---|",
    ]
    for name, b, o in rows:
        ratio = fmt(o / b) if isinstance(b, float) and isinstance(o, float) and b else "-"
        lines.append(f"| {name} | {fmt(b)} | {fmt(o)} | {ratio} |")
    (ROOT / "benchmarks" / "RESULTS-gpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
