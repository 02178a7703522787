"""``make bench`` / ``make bench-quick``: what the pipeline costs against what users would use instead.

Every figure is a ratio against a baseline measured in the same run, on the same machine, data,
seeds and settings; each is the median of ``--repeats`` runs (at least 3) with min and max.
Results go to ``benchmarks/RESULTS.md`` and ``benchmarks/results.json`` (``--quick``:
``RESULTS-quick.md`` and ``results-quick.json``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent


def _timed(fn: Callable[[], object], repeats: int) -> dict[str, float]:
    times = []
    for _ in range(repeats):
        os.sync()  # writes left over from the last run would otherwise land in this one's time
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}


def _data_pipeline(export: Path, out: Path) -> None:
    """``kedro run --pipeline data`` as a user runs it (a Kedro session in a copy of the project,
    its catalog and parameters as configured, every hook), pointed at ``export``, writing the
    YOLO folder to ``out``. MLflow tracking is off for the run: the ``cp -r`` baseline logs
    nothing either, and a tracking store's cost is not ingestion's."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from acne_detection.testing import copy_project

    project = out.parent / f"project-{export.name}"
    if not project.exists():
        copy_project(
            project,
            n_images=0,
            size=64,
            catalog={
                "raw_export": {"path": str(export), "format": "voc", "synthetic": None},
                "yolo_dataset": {"path": str(out)},
            },
        )
        (project / "conf" / "local" / "mlflow.yml").write_text(
            "tracking:\n  disable_tracking:\n    pipelines: [data]\n"
        )
    cwd = os.getcwd()
    os.chdir(project)  # Kedro resolves the catalog's relative paths from the working directory
    try:
        bootstrap_project(project)
        with KedroSession.create(project_path=project, env="local") as session:
            session.run(pipeline_name="data")
    finally:
        os.chdir(cwd)


def bench_ingestion(sizes: list[int], repeats: int, work: Path) -> list[dict]:
    """The data pipeline on N generated 640 px photographs against ``cp -r`` of the folder."""
    from concurrent.futures import ProcessPoolExecutor

    rows = []
    for n in sizes:
        export = work / f"export_{n}"
        parts = os.cpu_count() or 1  # the generator is sequential per seed: one part per core
        if not (export / f"part{parts - 1}" / "synthetic.json").exists():  # --work keeps them between runs
            with ProcessPoolExecutor(parts) as pool:
                list(
                    pool.map(
                        _write_part, [(export / f"part{i}", n // parts + (i < n % parts), i) for i in range(parts)]
                    )
                )

        def copy(export: Path = export) -> None:
            target = work / "copy"
            if target.is_symlink():
                target.unlink()
            shutil.rmtree(target, ignore_errors=True)
            subprocess.run(["cp", "-r", str(export), str(target)], check=True)

        def ingest(export: Path = export) -> None:
            shutil.rmtree(work / "yolo", ignore_errors=True)
            _data_pipeline(export, work / "yolo")

        base, ours = _timed(copy, repeats), _timed(ingest, repeats)
        rows.append(
            {
                "benchmark": f"ingestion, {n} photos",
                "baseline": "cp -r of the export",
                "baseline_s": base,
                "ours": "kedro run --pipeline data (validate, split, YOLO folder; tracking off)",
                "ours_s": ours,
                "ratio": ours["median_s"] / base["median_s"],
                "images_per_s": n / ours["median_s"],
            }
        )
    memory = {}
    for n in sizes:  # in a fresh process each, so one size's peak does not hide the next
        shutil.rmtree(work / "yolo", ignore_errors=True)
        code = (
            "from benchmarks.run import _data_pipeline; from pathlib import Path; "
            f"_data_pipeline(Path({str(work / f'export_{n}')!r}), Path({str(work / 'yolo')!r}))"
        )
        memory[f"{n} photos"] = _isolated_rss([sys.executable, "-c", code], ROOT)
    rows.append(
        {
            "benchmark": "peak resident memory of ingestion (MB)",
            "ours": "kedro run --pipeline data",
            "memory_mb": memory,
        }
    )
    return rows


def _write_part(args: tuple[Path, int, int]) -> None:
    from acne_detection.core.synthetic import write_voc_export

    folder, n, seed = args
    write_voc_export(folder, n_images=n, size=640, seed=seed)


def bench_metrics(n_detections: int, repeats: int) -> dict:
    """All eval metrics from a detection table against pycocotools' COCOeval alone."""
    from acne_detection.core.metrics import average_precision, match_detections, precision_recall_f1, threshold_sweep
    from acne_detection.testing import pycocotools_summary, random_detections

    n_images = max(n_detections // 4, 10)
    gt, dt_ = random_detections(n_images, n_classes=4, seed=0)
    images = [f"img{i}" for i in range(n_images)]

    def ours() -> pd.DataFrame:
        ap = average_precision(dt_, gt, images=images, n_classes=4)
        matches = match_detections(dt_, gt, iou_threshold=0.5)
        threshold_sweep(matches, gt.groupby("class_id").size(), np.arange(0.05, 0.951, 0.05))
        precision_recall_f1(matches[matches.confidence.isna() | (matches.confidence >= 0.25)], n_classes=4)
        return ap

    base, mine = _timed(lambda: pycocotools_summary(gt, dt_, images, 4), repeats), _timed(ours, repeats)
    stats = pycocotools_summary(gt, dt_, images, 4)
    ap = ours()
    return {
        "benchmark": f"metrics, {len(dt_)} detections",
        "baseline": "pycocotools COCOeval (AP only)",
        "baseline_s": base,
        "ours": "eval metrics: AP@50/75/50-95 + by size, threshold sweep, P/R/F1",
        "ours_s": mine,
        "ratio": mine["median_s"] / base["median_s"],
        "note": f"AP@50-95 difference {abs(ap.ap50_95.mean() - stats[0]):.1e}, "
        f"AP@50 {abs(ap.ap50.mean() - stats[1]):.1e}",
    }


def _peak_rss_mb(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """Wall time and peak resident memory (MB) of a command run in a child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, max(peak, before) / 1024


def bench_pipeline(work: Path, *, n_images: int, epochs: int, imgsz: int, repeats: int) -> list[dict]:
    """``kedro run`` against plain ``yolo train`` + ``yolo val`` on the same data and settings."""
    import yaml

    from acne_detection.testing import copy_project

    project = copy_project(work / "project", n_images=n_images, size=640)
    kedro = [
        str(Path(sys.executable).parent / "kedro"),
        "run",
        "--params",
        f"train.epochs={epochs},train.imgsz={imgsz}",
    ]
    subprocess.run(
        kedro, cwd=project, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )  # warm: data, weights
    from acne_detection.core.params import parse
    from acne_detection.core.training_config import training_overrides

    params = yaml.safe_load((ROOT / "conf" / "base" / "parameters_train.yml").read_text())["train"]
    data_yaml = project / "data" / "05_model_input" / "yolo" / "data.yaml"
    weights = project / "data" / "06_models" / "pretrained" / "yolov8n.pt"
    yolo = str(Path(sys.executable).parent / "yolo")
    # The very settings the train node hands Ultralytics, so both sides do the same work.
    same = training_overrides(
        parse("train", {**params, "epochs": epochs, "imgsz": imgsz}),
        data_yaml=data_yaml,
        device="cpu",
        workdir=work / "yolo_runs",
    )
    common = [f"{k}={v}" for k, v in same.items() if k not in ("data", "name")]
    plain_train = [yolo, "detect", "train", f"data={data_yaml}", f"model={weights}", "name=train", *common]
    plain_val = [
        yolo,
        "detect",
        "val",
        f"data={data_yaml}",
        f"model={work / 'yolo_runs' / 'train' / 'weights' / 'best.pt'}",
        "split=test",
        f"imgsz={imgsz}",
        "plots=False",
        f"project={work / 'yolo_runs'}",
        "name=val",
        "exist_ok=True",
    ]
    ours_times, base_times, train_times, base_train_times, rss = [], [], [], [], {}
    for _ in range(repeats):
        wall, _ = _peak_rss_mb(kedro, project)
        ours_times.append(wall)
        wall, _ = _peak_rss_mb([*kedro[:2], "--pipeline", "train", *kedro[2:]], project)
        train_times.append(wall)
        t0 = time.perf_counter()
        # cwd=work: plain Ultralytics logs to ./mlflow.db and ./mlruns (its MLflow callback), kept in the temp dir
        subprocess.run(plain_train, check=True, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base_train_times.append(time.perf_counter() - t0)
        subprocess.run(plain_val, check=True, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base_times.append(time.perf_counter() - t0)
    for name in ("data", "preview", "train", "eval"):
        rss[name] = _isolated_rss([*kedro[:2], "--pipeline", name, *kedro[2:]], project)

    def stats(values: list[float]) -> dict[str, float]:
        return {"median_s": statistics.median(values), "min_s": min(values), "max_s": max(values)}

    n_train = len(list((project / "data" / "05_model_input" / "yolo" / "train" / "images").iterdir()))
    return [
        {
            "benchmark": f"whole run, {n_images} photos, {epochs} epochs at {imgsz} px",
            "baseline": "yolo train + yolo val",
            "baseline_s": stats(base_times),
            "ours": "kedro run (data, preview, train, eval)",
            "ours_s": stats(ours_times),
            "ratio": statistics.median(ours_times) / statistics.median(base_times),
        },
        {
            "benchmark": f"training only ({n_train} train images x {epochs} epochs)",
            "baseline": "yolo train",
            "baseline_s": stats(base_train_times),
            "ours": "kedro run --pipeline train",
            "ours_s": stats(train_times),
            "ratio": statistics.median(train_times) / statistics.median(base_train_times),
            "images_per_s": n_train * epochs / statistics.median(train_times),
            "baseline_images_per_s": n_train * epochs / statistics.median(base_train_times),
        },
        {
            "benchmark": "peak resident memory per pipeline (MB)",
            "baseline": "-",
            "ours": "kedro run --pipeline NAME",
            "memory_mb": rss,
        },
    ]


def _isolated_rss(cmd: list[str], cwd: Path) -> float:
    """Peak RSS of one command, measured in a fresh Python so earlier children do not count."""
    code = (
        "import resource,subprocess,sys;subprocess.run(sys.argv[1:],check=True,stdout=subprocess.DEVNULL,"
        "stderr=subprocess.DEVNULL);print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", code, *cmd], cwd=cwd, check=True, capture_output=True, text=True)
    return int(out.stdout.strip()) / 1024


def _markdown(results: list[dict], meta: dict) -> str:
    lines = [
        f"# Benchmark results ({meta['mode']})",
        "",
        f"Machine: {meta['machine']}; date: {meta['date']}; commit of each row in the last column.",
        "Each time is the median of the runs, with min-max; ratio = ours / baseline (lower is better).",
        "",
        "| benchmark | baseline | baseline time (s) | ours | our time (s) | ratio | notes | commit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        commit = f"`{r.get('commit', meta['commit'])}`"
        if "memory_mb" in r:
            notes = ", ".join(f"{k}: {v:.0f} MB" for k, v in r["memory_mb"].items())
            lines.append(f"| {r['benchmark']} | - | - | {r['ours']} | - | - | {notes} | {commit} |")
            continue
        b, o = r["baseline_s"], r["ours_s"]
        notes = r.get("note", "")
        if "images_per_s" in r:
            notes = (notes + f" {r['images_per_s']:.1f} images/s").strip()
        if "baseline_images_per_s" in r:
            notes += f" (baseline {r['baseline_images_per_s']:.1f})"
        base = "-" if b is None else f"{b['median_s']:.2f} ({b['min_s']:.2f}-{b['max_s']:.2f})"
        ours = "-" if o is None else f"{o['median_s']:.2f} ({o['min_s']:.2f}-{o['max_s']:.2f})"  # not a time
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"  # a cost at scale, with no baseline to run
        lines.append(
            f"| {r['benchmark']} | {r['baseline']} | {base} | {r['ours']} | {ours} | {ratio} | {notes} | {commit} |"
        )
    return "\n".join(lines) + "\n"


GROUPS = ("ingestion", "metrics", "pipeline")


def _run(groups: list[str], quick: bool, repeats: int, work: Path) -> list[dict]:
    results = []
    if "ingestion" in groups:
        results += bench_ingestion([200] if quick else [1000, 5000, 10000], repeats, work)
    if "metrics" in groups:
        results.append(bench_metrics(20_000 if quick else 100_000, repeats))
    if "pipeline" in groups:
        size = {"n_images": 24, "epochs": 1, "imgsz": 64} if quick else {"n_images": 200, "epochs": 5, "imgsz": 320}
        results += bench_pipeline(work, repeats=repeats, **size)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: a few minutes on 2 cores")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--only",
        nargs="+",
        choices=GROUPS,
        default=list(GROUPS),
        help="run these groups; the other rows of the results file are kept as they were",
    )
    parser.add_argument("--work", type=Path, help="keep generated exports here between runs (default: a temp folder)")
    parser.add_argument(
        "--out", type=Path, default=HERE, help="where the results file and its table go (default: benchmarks/)"
    )
    args = parser.parse_args()
    repeats = max(args.repeats, 3)
    sys.path.insert(0, str(ROOT))
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    if args.work:
        args.work.mkdir(parents=True, exist_ok=True)
        results = _run(args.only, args.quick, repeats, args.work)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            results = _run(args.only, args.quick, repeats, Path(tmp))
    for row in results:
        row["commit"] = commit or "unknown"
    suffix = "-quick" if args.quick else ""  # a quick run never overwrites the full table
    out = args.out / f"results{suffix}.json"
    if set(args.only) != set(GROUPS) and out.exists():  # keep the rows of the groups not run
        fresh = {r["benchmark"] for r in results}
        kept = [r for r in json.loads(out.read_text())["results"] if r["benchmark"] not in fresh]
        results = sorted(kept + results, key=lambda r: GROUPS.index(_group(r["benchmark"])))
    meta = {
        "mode": "quick" if args.quick else "full",
        "date": dt.date.today().isoformat(),
        "commit": commit or "unknown",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
    }
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    (args.out / f"RESULTS{suffix}.md").write_text(_markdown(results, meta))
    print(_markdown(results, meta))


def merge_results(rows: list[dict]) -> None:
    """Put rows measured by another script (``benchmarks.predict``) into the full results,
    replacing earlier rows of the same name, and rewrite ``RESULTS.md``."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    out = HERE / "results.json"
    saved = json.loads(out.read_text()) if out.exists() else {"meta": {}, "results": []}
    fresh = {r["benchmark"] for r in rows}
    rows = [{**{k: v for k, v in r.items() if k != "found"}, "commit": commit or "unknown"} for r in rows]
    results = [r for r in saved["results"] if r["benchmark"] not in fresh] + rows
    meta = {
        **saved["meta"],
        "date": dt.date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
    }
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    (HERE / "RESULTS.md").write_text(_markdown(results, meta))


def _group(benchmark: str) -> str:
    return "ingestion" if "ingestion" in benchmark else "metrics" if benchmark.startswith("metrics") else "pipeline"


if __name__ == "__main__":
    main()
