"""The project's cost over plain Ultralytics at the defaults: ``kedro run`` (data, preview,
train, eval, everything logged) against ``yolo train`` + ``yolo val`` with the very settings the
train node hands Ultralytics, on the default synthetic export (240 photos, 20 epochs at 416 px).

``python -m benchmarks.overhead`` (about 20 minutes on 2 cores: one run of each; the export is
generated and ingested once first, so neither side pays for making the data). The row goes into
``benchmarks/RESULTS.md`` through ``benchmarks.run.merge_results``.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from acne_detection.testing import PROJECT_ROOT, copy_project
from benchmarks.concurrency import once
from benchmarks.run import merge_results


def main() -> None:
    from acne_detection.core.params import parse
    from acne_detection.core.training_config import training_overrides

    train = yaml.safe_load((PROJECT_ROOT / "conf" / "base" / "parameters_train.yml").read_text())["train"]
    n_images = yaml.safe_load((PROJECT_ROOT / "conf" / "base" / "catalog.yml").read_text())["raw_export"]["synthetic"][
        "n_images"
    ]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        project = copy_project(work / "project", n_images=n_images, size=640)
        kedro = str(Path(sys.executable).parent / "kedro")
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "check": True}
        subprocess.run([kedro, "run", "--pipeline", "data"], cwd=project, **quiet)  # the export exists before timing
        start = time.perf_counter()
        subprocess.run([kedro, "run"], cwd=project, **quiet)
        ours = time.perf_counter() - start
        data_yaml = project / "data" / "05_model_input" / "yolo" / "data.yaml"
        weights = project / "data" / "06_models" / "pretrained" / "yolov8n.pt"
        same = training_overrides(parse("train", train), data_yaml=data_yaml, device="cpu", workdir=work / "yolo_runs")
        yolo = str(Path(sys.executable).parent / "yolo")
        common = [f"{k}={v}" for k, v in same.items() if k not in ("data", "name")]
        start = time.perf_counter()
        subprocess.run(
            [yolo, "detect", "train", f"data={data_yaml}", f"model={weights}", "name=train", *common], cwd=work, **quiet
        )
        best = work / "yolo_runs" / "train" / "weights" / "best.pt"
        subprocess.run(
            [
                yolo,
                "detect",
                "val",
                f"data={data_yaml}",
                f"model={best}",
                "split=test",
                f"imgsz={train['imgsz']}",
                "plots=False",
                f"project={work / 'yolo_runs'}",
                "name=val",
                "exist_ok=True",
            ],
            cwd=work,
            **quiet,
        )
        base = time.perf_counter() - start
    row = {
        "benchmark": f"whole run at the defaults, {n_images} photos, {train['epochs']} epochs at {train['imgsz']} px",
        "baseline": "yolo train + yolo val",
        "baseline_s": once(base),
        "ours": "kedro run (data, preview, train, eval)",
        "ours_s": once(ours),
        "ratio": ours / base,
        "note": f"one run each; overhead {ours - base:+.1f} s (skin tone, grading, bootstrap, plots, registry)",
    }
    print(row)
    merge_results([row])


if __name__ == "__main__":
    main()
