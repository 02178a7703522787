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


def bench_slicing(model_path: Path, work: Path, n_photos: int, conf: float) -> list[dict]:
    from ultralytics import YOLO

    from acne_detection.core.inference import InferenceSettings, model_imgsz, predict_boxes
    from acne_detection.core.metrics import match_detections
    from acne_detection.core.params import PredictParams
    from acne_detection.core.synthetic import write_new_photos

    folder = write_new_photos(work / "phone", n_small=0, n_phone=n_photos, seed=7, labels=True)
    truth = _truth(folder)
    small = (truth.x_max - truth.x_min) * (truth.y_max - truth.y_min) < 16 * 16
    model = YOLO(str(model_path))
    imgsz = model_imgsz(model)
    photos = [(p.name, p) for p in sorted(folder.glob("*.jpg"))]
    results = {}
    for mode in ("never", "always"):
        # predict's own settings (parameters_predict.yml's defaults), slicing forced one way, then the other
        settings = InferenceSettings.from_params(PredictParams(slicing=mode, max_det=3000), imgsz=imgsz, conf=conf)
        start = time.perf_counter()
        found = predict_boxes(model, photos, settings).assign(class_id=0)
        seconds = (time.perf_counter() - start) / len(photos)
        matches = match_detections(found, truth, iou_threshold=0.5)
        hit = matches[(matches.true_class >= 0) & (matches.pred_class >= 0)]
        recall = len(hit) / len(truth)
        count_error = (
            (found.groupby("image").size().reindex(truth.image.unique(), fill_value=0) - truth.groupby("image").size())
            .abs()
            .mean()
        )
        results[mode] = {"recall": recall, "count_mae": float(count_error), "s_per_photo": seconds, "found": found}
    # small-lesion recall, by matching small true boxes alone (IoU 0.5, any detection)
    for mode, r in results.items():
        m = match_detections(r["found"], truth[small], iou_threshold=0.5)
        r["recall_small"] = len(m[(m.true_class >= 0) & (m.pred_class >= 0)]) / max(int(small.sum()), 1)
    plain, sliced = results["never"], results["always"]
    note = (
        f"{n_photos} photos 3000x4000, {len(truth)} lesions ({int(small.sum())} under 16x16 px), imgsz {imgsz}, "
        f"confidence >= {conf:.2f}: "
        f"recall {plain['recall']:.3f} -> {sliced['recall']:.3f}, small lesions {plain['recall_small']:.3f} -> "
        f"{sliced['recall_small']:.3f}, counting MAE {plain['count_mae']:.1f} -> "
        f"{sliced['count_mae']:.1f} lesions/photo"
    )
    return [
        {
            "benchmark": "sliced inference on phone photos",
            "baseline": "whole photo resized to imgsz",
            "baseline_s": {
                "median_s": plain["s_per_photo"],
                "min_s": plain["s_per_photo"],
                "max_s": plain["s_per_photo"],
            },
            "ours": "SAHI tiles at imgsz (predict slicing: always)",
            "ours_s": {
                "median_s": sliced["s_per_photo"],
                "min_s": sliced["s_per_photo"],
                "max_s": sliced["s_per_photo"],
            },
            "ratio": sliced["s_per_photo"] / plain["s_per_photo"],
            "note": note + "; times per photo",
        }
    ]


def bench_throughput(model_path: Path, work: Path, n_photos: int, repeats: int) -> list[dict]:
    from ultralytics import YOLO

    from acne_detection.core.inference import InferenceSettings, model_imgsz, predict_boxes
    from acne_detection.core.params import PredictParams
    from acne_detection.core.synthetic import write_voc_export

    folder = write_voc_export(work / "plain", n_images=n_photos, size=640, seed=3)
    paths = sorted(folder.glob("*.jpg"))
    model = YOLO(str(model_path))
    imgsz = model_imgsz(model)
    settings = InferenceSettings.from_params(PredictParams(), imgsz=imgsz, conf=0.25)  # predict's defaults

    def ours() -> None:
        predict_boxes(model, [(p.name, p) for p in paths], settings)

    def theirs() -> None:  # what `yolo predict source=DIR imgsz=... conf=...` runs
        for _ in model.predict(
            [str(p) for p in paths], imgsz=imgsz, conf=0.25, device="cpu", verbose=False, stream=True, batch=8
        ):
            pass

    ours()  # warm-up (model fuse, first allocations)
    base, mine = _timed(theirs, repeats), _timed(ours, repeats)
    import shutil

    from acne_detection.core.inference import load_detector

    copy = work / "model.pt"
    shutil.copy(model_path, copy)
    onnx_model, _ = load_detector(copy, runtime="onnx", imgsz=imgsz)

    def onnx() -> None:
        predict_boxes(onnx_model, [(p.name, p) for p in paths], settings)

    onnx()
    fast = _timed(onnx, repeats)
    onnx_row = {
        "benchmark": f"prediction on ONNX Runtime, {n_photos} photos 640 px",
        "baseline": "inference.predict_boxes on PyTorch",
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
            "ours": "inference.predict_boxes (predict pipeline)",
            "ours_s": mine,
            "ratio": mine["median_s"] / base["median_s"],
            "note": f"{n_photos / mine['median_s']:.1f} photos/s (baseline {n_photos / base['median_s']:.1f}), "
            f"imgsz {imgsz}, cpu",
        },
    ][::-1]


def _peak_child(model_path: Path, folder: Path, n: int) -> float:
    code = (
        "import sys, resource; from pathlib import Path; from ultralytics import YOLO;"
        "from acne_detection.core.inference import InferenceSettings, model_imgsz, iter_predictions;"
        f"m = YOLO({str(model_path)!r}); ps = sorted(Path({str(folder)!r}).glob('*.jpg'))[:{n}];"
        "from acne_detection.core.params import PredictParams;"
        "s = InferenceSettings.from_params(PredictParams(), imgsz=model_imgsz(m), conf=0.25);"
        "k = sum(len(r) for _, r in iter_predictions(m, [(p.name, p) for p in ps], s));"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return float(out.stdout.strip().splitlines()[-1])


def bench_memory(model_path: Path, work: Path) -> list[dict]:
    from acne_detection.core.synthetic import write_voc_export

    folder = write_voc_export(work / "many", n_images=1000, size=640, seed=5)
    peaks = {n: _peak_child(model_path, folder, n) for n in (100, 1000)}
    return [
        {
            "benchmark": "peak resident memory of prediction (MB)",
            "ours": "inference.iter_predictions (streamed)",
            "memory_mb": {f"{n} photos": v for n, v in peaks.items()},
        }
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=ROOT / "data" / "06_models" / "acne_yolov8n.pt")
    parser.add_argument("--phone-photos", type=int, default=6)
    parser.add_argument("--photos", type=int, default=100)
    parser.add_argument(
        "--conf",
        type=float,
        default=None,
        help="confidence threshold for the slicing rows (default: the operating point eval recorded "
        "for this model in data/06_models/model_threshold.json, else 0.25)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not args.model.is_file():
        raise SystemExit(f"{args.model}: no trained model; run `make run` first, or pass --model")
    from acne_detection.datasets.weights import sha256_of
    from benchmarks.run import merge_results

    record = ROOT / "data" / "06_models" / "model_threshold.json"
    saved = json.loads(record.read_text()) if record.exists() else {}
    conf = args.conf or (saved["threshold"] if saved.get("model_sha256") == sha256_of(args.model) else 0.25)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows = bench_slicing(args.model, work, args.phone_photos, conf)
        rows += bench_throughput(args.model, work, args.photos, args.repeats)
        rows += bench_memory(args.model, work)
    merge_results(rows)
    print(json.dumps([{k: v for k, v in r.items() if k != "found"} for r in rows], indent=2, default=float))


if __name__ == "__main__":
    main()
