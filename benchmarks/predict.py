"""``python -m benchmarks.predict``: what prediction on new photos costs and gains, with the model
``make run`` trained (``data/06_models/acne_yolov8n.pt``, or ``--model``).

* slicing vs plain resizing on phone photos drawn as a phone sees a face (3000 x 4000, lesions
  of absolute size: comedones 5-15 px): recall of all and of small lesions, counting error,
  seconds per photo;
* throughput: ``predict_boxes`` (what the ``predict`` pipeline runs) against Ultralytics' own
  ``predict`` on the same photos, image size and device;
* peak memory of ``predict_boxes`` at 100 and 1,000 photos (streamed, so it should be flat).

Rows are merged into ``benchmarks/RESULTS.md`` / ``results.json`` like ``benchmarks.run``'s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def _timed(fn, repeats: int) -> dict:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}


def _truth(folder: Path) -> pd.DataFrame:
    import xml.etree.ElementTree as ET

    rows = []
    for xml in sorted(folder.glob("*.xml")):
        for obj in ET.parse(xml).findall("object"):
            b = obj.find("bndbox")
            rows.append(
                (xml.with_suffix(".jpg").name, 0, *(float(b.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")))
            )
    return pd.DataFrame(rows, columns=["image", "class_id", "x_min", "y_min", "x_max", "y_max"])


def _phone_set(
    work: Path, name: str, n_photos: int, size: tuple[int, int], background: bool
) -> tuple[Path, pd.DataFrame, pd.Series]:
    """A generated set of labelled phone photos (``size``: width, height), its true boxes and
    which are small."""
    from acne_detection.core.synthetic import write_new_photos

    seed = 8 if background else 7
    folder = write_new_photos(
        work / name,
        n_small=0,
        n_phone=n_photos,
        seed=seed,
        labels=True,
        background=background,
        phone_size=size,
    )
    truth = _truth(folder)
    return folder, truth, (truth.x_max - truth.x_min) * (truth.y_max - truth.y_min) < 16 * 16


def _measure(model, folder: Path, truth: pd.DataFrame, small: pd.Series, settings, operating) -> dict:
    """Seconds per photo, recall (all, and lesions under 16 x 16 px) and counting error of the
    boxes the predict pipeline counts: detected down to the calibration's floor, calibrated,
    kept at the operating point (``operating``: the calibration, the threshold and the NMS IoU)."""
    from acne_detection.core.inference import predict_boxes
    from acne_detection.core.metrics import match_detections

    calibration, threshold, _ = operating
    photos = [(p.name, p) for p in sorted(folder.glob("*.jpg"))]
    start = time.perf_counter()
    found = calibration.split(predict_boxes(model, photos, settings), threshold)[0].assign(class_id=0)
    seconds = (time.perf_counter() - start) / len(photos)

    def recall(true: pd.DataFrame) -> float:
        m = match_detections(found, true, iou_threshold=0.5)
        return len(m[(m.true_class >= 0) & (m.pred_class >= 0)]) / max(len(true), 1)

    counts = found.groupby("image").size().reindex(truth.image.unique(), fill_value=0)
    return {
        "s_per_photo": seconds,
        "recall": recall(truth),
        "recall_small": recall(truth[small]),
        "count_mae": float((counts - truth.groupby("image").size()).abs().mean()),
    }


def _row(benchmark: str, baseline: str, base_s: float, ours: str, ours_s: float, note: str) -> dict:
    one = lambda v: {"median_s": v, "min_s": v, "max_s": v}  # noqa: E731 - one timed pass over the set
    return {
        "benchmark": benchmark,
        "baseline": baseline,
        "baseline_s": one(base_s),
        "ours": ours,
        "ours_s": one(ours_s),
        "ratio": ours_s / base_s,
        "note": note,
    }


def measured_runtimes(calibration: Path | None) -> list[str]:
    """Every runtime of the table (``core.runtimes.RUNTIMES``), but the calibrated ones when there is
    no training split to calibrate on."""
    from acne_detection.core.runtimes import RUNTIMES

    skipped = [name for name, entry in RUNTIMES.items() if entry.calibrated and calibration is None]
    for name in skipped:
        print(f"{name} skipped: no training data.yaml to calibrate on (--data)", file=sys.stderr)
    return [name for name in RUNTIMES if name not in skipped]


def bench_slicing(
    model_path: Path,
    work: Path,
    n_photos: int,
    operating: tuple,
    calibration: Path | None,
    size: tuple[int, int] = (3000, 4000),
) -> list[dict]:
    """Per phone photo (3000 x 4000 by default), on (a) faces filling the frame and (b) faces with at least
    half background: resized whole-photo prediction, and sliced prediction on every runtime
    with and without background skipping, against today's sliced path (PyTorch, every tile).
    Boxes as ``predict`` counts them: ``operating`` is the model's calibration, threshold and NMS IoU."""
    import shutil

    from acne_detection.core.inference import InferenceSettings, model_imgsz
    from acne_detection.core.params import PredictParams
    from acne_detection.core.runtimes import load_detector

    weights = work / "model.pt"  # exports land in work/exports, not beside the user's model
    shutil.copy(model_path, weights)
    sets = {
        "(a) full-frame skin": _phone_set(work, "phone", n_photos, size, background=False),
        "(b) half background": _phone_set(work, "phone_bg", n_photos, size, background=True),
    }
    rows, measured = [], {}
    for runtime in measured_runtimes(calibration):
        model, imgsz = load_detector(weights, runtime=runtime, calibration_data=calibration)
        imgsz = model_imgsz(model) if runtime == "torch" else imgsz
        for set_name, (folder, truth, small) in sets.items():
            for mode in ("never", "always"):
                for skip in (False, True) if mode == "always" else (False,):
                    if mode == "never" and runtime != "torch":
                        continue
                    params = PredictParams(slicing=mode, skip_background=skip, max_det=3000, runtime=runtime)
                    conf = operating[0].detector_floor(operating[1])
                    settings = InferenceSettings.from_params(params, imgsz=imgsz, conf=conf, nms_iou=operating[2])
                    if not measured:  # warm-up: the first pass of a process pays for allocations
                        _measure(model, folder, truth, small, settings, operating)
                    measured[(set_name, runtime, mode, skip)] = _measure(
                        model, folder, truth, small, settings, operating
                    )
    for set_name, (_, truth, small) in sets.items():
        today = measured[(set_name, "torch", "always", False)]
        plain = measured[(set_name, "torch", "never", False)]
        head = (
            f"{n_photos} photos {size[0]}x{size[1]} {set_name}, {len(truth)} lesions "
            f"({int(small.sum())} under 16x16 px), "
            f"counted at calibrated confidence >= {operating[1]:.2f}"
        )
        rows.append(
            _row(
                f"sliced inference on phone photos {set_name}",
                "whole photo resized to imgsz",
                plain["s_per_photo"],
                "SAHI tiles at imgsz (predict slicing: always), PyTorch, every tile",
                today["s_per_photo"],
                f"{head}: recall {plain['recall']:.3f} -> {today['recall']:.3f}, small lesions "
                f"{plain['recall_small']:.3f} -> {today['recall_small']:.3f}, counting MAE {plain['count_mae']:.1f} -> "
                f"{today['count_mae']:.1f} lesions/photo; s per photo",
            )
        )
        for (name, runtime, mode, skip), r in measured.items():
            if name != set_name or mode != "always" or (runtime == "torch" and not skip):
                continue
            loss = today["recall_small"] - r["recall_small"]
            rows.append(
                _row(
                    f"sliced phone photo {set_name}: {runtime}{', skipping background' if skip else ''}",
                    "sliced, PyTorch, every tile",
                    today["s_per_photo"],
                    f"predict.runtime {runtime}, skip_background {str(skip).lower()}",
                    r["s_per_photo"],
                    f"{head}: {r['s_per_photo']:.2f} s/photo; recall {r['recall']:.3f} "
                    f"(PyTorch {today['recall']:.3f}), "
                    f"small lesions {r['recall_small']:.3f} (PyTorch {today['recall_small']:.3f}, "
                    f"{'within' if loss <= 0.02 else 'NOT within'} 0.02), counting MAE {r['count_mae']:.1f}",
                )
            )
    return rows


def bench_throughput(model_path: Path, work: Path, n_photos: int, repeats: int) -> list[dict]:
    """The predictor's throughput (what ``predict`` and the served model run) against Ultralytics'
    own ``predict``, on PyTorch; then the predictor on ONNX Runtime against it on PyTorch."""
    import shutil

    from acne_detection.core.files import sha256_of
    from acne_detection.core.grading import GradingRule
    from acne_detection.core.params import PredictParams
    from acne_detection.core.synthetic import write_voc_export
    from acne_detection.model.predictor import Predictor
    from acne_detection.model.record import ModelRecord

    folder = write_voc_export(work / "plain", n_images=n_photos, size=640, seed=3)
    paths = sorted(folder.glob("*.jpg"))
    copy = work / "model.pt"
    shutil.copy(model_path, copy)
    record = ModelRecord.default(sha256_of(copy), GradingRule())  # raw confidences at 0.25, predict's defaults
    predictor = Predictor.load(record, copy, PredictParams(runtime="torch"))
    imgsz = predictor.settings.imgsz

    def ours() -> None:
        for _ in predictor.boxes([(p.name, p) for p in paths]):
            pass

    def theirs() -> None:  # what `yolo predict source=DIR imgsz=... conf=...` runs
        for _ in predictor.detector.predict(
            [str(p) for p in paths], imgsz=imgsz, conf=0.25, device="cpu", verbose=False, stream=True, batch=8
        ):
            pass

    ours()  # warm-up (model fuse, first allocations)
    base, mine = _timed(theirs, repeats), _timed(ours, repeats)
    onnx_predictor = Predictor.load(record, copy, PredictParams(runtime="onnx", imgsz=imgsz))

    def onnx() -> None:
        for _ in onnx_predictor.boxes([(p.name, p) for p in paths]):
            pass

    onnx()
    fast = _timed(onnx, repeats)
    onnx_row = {
        "benchmark": f"prediction on ONNX Runtime, {n_photos} photos 640 px",
        "baseline": "the predictor on PyTorch",
        "baseline_s": mine,
        "ours": "the same, predict.runtime: onnx",
        "ours_s": fast,
        "ratio": fast["median_s"] / mine["median_s"],
        "note": f"{n_photos / fast['median_s']:.1f} photos/s vs {n_photos / mine['median_s']:.1f} on PyTorch, "
        f"imgsz {imgsz}, cpu",
    }
    return [
        onnx_row,
        {
            "benchmark": f"prediction throughput, {n_photos} photos 640 px",
            "baseline": "Ultralytics predict (stream, batch 8)",
            "baseline_s": base,
            "ours": "model.predictor.Predictor (predict pipeline, served model)",
            "ours_s": mine,
            "ratio": mine["median_s"] / base["median_s"],
            "note": f"{n_photos / mine['median_s']:.1f} photos/s (baseline {n_photos / base['median_s']:.1f}), "
            f"imgsz {imgsz}, cpu",
        },
    ][::-1]


def _peak_child(
    model_path: Path, folder: Path, n: int, runtime: str = "torch", calibration: Path | None = None
) -> float:
    code = (
        "import sys; from pathlib import Path;"
        "from acne_detection.core.inference import InferenceSettings, iter_predictions;"
        "from acne_detection.core.runtimes import load_detector;"
        "from acne_detection.core.params import PredictParams;"
        f"m, size = load_detector(Path({str(model_path)!r}), runtime={runtime!r}, "
        f"calibration_data={str(calibration) if calibration else None!r});"
        f"ps = sorted(Path({str(folder)!r}).glob('*.jpg'))[:{n}];"
        f"s = InferenceSettings.from_params(PredictParams(runtime={runtime!r}), imgsz=size, conf=0.25, nms_iou=0.7);"
        "k = sum(len(r) for _, r in iter_predictions(m, [(p.name, p) for p in ps], s));"
        "print(_peak_mb())"
    )
    out = subprocess.run([sys.executable, "-c", PEAK + code], capture_output=True, text=True, check=True, cwd=ROOT)
    return float(out.stdout.strip().splitlines()[-1])


# The child's own peak: VmHWM belongs to its address space, made new by exec. Not getrusage's
# ru_maxrss, which Linux carries over fork and exec from the parent: measured that way, the
# child reported the benchmark parent's 2.3-2.6 GB (four runtimes loaded) as its own.
PEAK = (
    "def _peak_mb():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM:'):\n"
    "            return int(line.split()[1]) / 1024\n"
)


def bench_memory(
    model_path: Path, work: Path, calibration: Path | None, counts: tuple[int, ...] = (100, 1000)
) -> list[dict]:
    """Peak resident memory of a process predicting a stream of 640 px photos, per runtime (the
    export is made before, in the cache the process loads it from)."""
    import shutil

    from acne_detection.core.runtimes import load_detector
    from acne_detection.core.synthetic import write_voc_export

    folder = write_voc_export(work / "many", n_images=max(counts), size=640, seed=5)
    weights = work / "model.pt"
    if not weights.exists():
        shutil.copy(model_path, weights)
    rows = []
    for runtime in measured_runtimes(calibration):
        load_detector(weights, runtime=runtime, calibration_data=calibration)  # the export, made once
        peaks = {n: _peak_child(weights, folder, n, runtime, calibration) for n in counts}
        rows.append(
            {
                "benchmark": f"peak resident memory of prediction (MB), {runtime}",
                "ours": f"inference.iter_predictions (streamed, 640 px photos), predict.runtime {runtime}",
                "memory_mb": {f"{n} photos": v for n, v in peaks.items()},
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=ROOT / "data" / "06_models" / "acne_yolov8n.pt")
    parser.add_argument("--phone-photos", type=int, default=6)
    parser.add_argument("--photos", type=int, default=100)
    parser.add_argument(
        "--record",
        type=Path,
        default=ROOT / "data" / "06_models" / "model_record.json",
        help="eval's model record for this model: its operating point and calibration (else: raw, at 0.25)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke sizes (1 phone photo of 1200 x 1600, 8 photos, memory at 4 photos); nothing is merged",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=ROOT / "data" / "05_model_input" / "yolo" / "data.yaml",
        help="the training split's data.yaml the INT8 export calibrates on (make run writes it)",
    )
    args = parser.parse_args()
    if not args.model.is_file():
        raise SystemExit(f"{args.model}: no trained model; run `make run` first, or pass --model")
    from acne_detection.core.calibration import Calibration
    from acne_detection.core.files import sha256_of
    from acne_detection.core.inference import DEFAULT_NMS_IOU
    from acne_detection.model.record import ModelRecord
    from benchmarks.run import merge_results

    saved = ModelRecord.from_json(args.record.read_text()) if args.record.is_file() else None
    own = saved is not None and saved.model_sha256 == sha256_of(args.model)
    operating = (
        (saved.calibrated(), saved.threshold, saved.nms_iou)
        if own
        else (Calibration.from_dict(None), 0.25, DEFAULT_NMS_IOU)
    )

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = args.data if args.data.is_file() else None
        n_phone, n_photos = (1, 8) if args.quick else (args.phone_photos, args.photos)
        size, counts = ((1200, 1600), (4,)) if args.quick else ((3000, 4000), (100, 1000))
        rows = bench_slicing(args.model, work, n_phone, operating, data, size)
        rows += bench_throughput(args.model, work, n_photos, 1 if args.quick else args.repeats)
        rows += bench_memory(args.model, work, data, counts)
    if not args.quick:
        merge_results(rows)
    print(json.dumps([{k: v for k, v in r.items() if k != "found"} for r in rows], indent=2, default=float))


if __name__ == "__main__":
    main()
