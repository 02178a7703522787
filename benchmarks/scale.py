"""The whole DAG on an export shaped like ACNE04's, at tiny training settings: does everything
after training (eval, skin tone, grading, the reports) hold at the size of a real export?

``python -m benchmarks.scale`` generates a Pascal VOC export of ``--sources`` source photos
(default 1,000) at 640 px in 3 Roboflow-style copies each (the original, a brighter one and a
mirrored darker one: ACNE04's quirk), 0-60 lesions per photo, grades in the file names in
ACNE04's proportions, a few photos whose skin tone cannot be measured (grayscale) and one
photo of each problem the project quarantines. Then, as a user would, ``kedro run --pipeline
NAME`` for data, preview, train and eval on a copy of the project (1 epoch at 64 px: training
is measured elsewhere), each timed, its peak resident memory (the process tree, sampled every
0.1 s) recorded. The row goes into ``benchmarks/RESULTS.md`` through
``benchmarks.run.merge_results``. ``--sources 20`` is the suite's smoke run (no row written).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import yaml
from PIL import Image

from acne_detection.testing import copy_project

PIPELINES = ("data", "preview", "train", "eval")
TINY = "train.epochs=1,train.imgsz=64,train.batch=16,preview.samples=4,preview.loss_samples=16"
_GRADE_SHARE = (0.39, 0.38, 0.12, 0.11)  # ACNE04's photos per grade (the dev slice: 261/259/84/72)


def write_acne04_like_export(root: Path, *, sources: int, size: int = 640, seed: int = 0) -> Path:
    """A VOC export shaped like Roboflow's ACNE04 (see the module docstring); returns ``root``."""
    from acne_detection.core.synthetic import SyntheticSpec, _voc_xml, render_photo

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    spec = SyntheticSpec(size=size, counts=((0, 5), (6, 20), (21, 50), (51, 60)))
    for i in range(sources):
        grade = int(rng.choice(4, p=_GRADE_SHARE))
        pixels, boxes = render_photo(rng, spec, grade=grade)
        if i % 200 == 7:  # a photo whose skin tone cannot be measured, in all its copies
            pixels = np.repeat(pixels.mean(axis=2, keepdims=True), 3, axis=2).astype(np.uint8)
        mirrored = [(c, size - x1, y0, size - x0, y1) for c, x0, y0, x1, y1 in boxes]
        copies = ((pixels, boxes), (np.clip(pixels * 1.15, 0, 255), boxes), (pixels[:, ::-1] * 0.85, mirrored))
        for c, (copy, copy_boxes) in enumerate(copies):
            name = f"levle{grade}_{i}_jpg.rf.{rng.bytes(16).hex()}.jpg"
            Image.fromarray(copy.astype(np.uint8)).save(root / name, quality=90)
            (root / name).with_suffix(".xml").write_text(_voc_xml(name, size, copy_boxes), encoding="utf-8")
    (root / "zero.jpg").write_bytes(b"")  # what the project must quarantine, each with its reason
    (root / "notes.jpg").write_text("visit 3\n")
    for name in ("zero.jpg", "notes.jpg"):
        (root / name).with_suffix(".xml").write_text(_voc_xml(name, size, []), encoding="utf-8")
    return root


def run_measured(cmd: list[str], cwd: Path, per_node: dict[str, float] | None = None) -> tuple[float, float]:
    """Run ``cmd``; its wall time in seconds and the peak resident memory of its process tree in MB.

    With ``per_node``, Kedro's "Running node: NAME" log lines are followed as they come, and
    ``per_node[NAME]`` gets the peak of the tree (MB) while that node ran: where memory goes."""
    import re

    peak = [0]
    current = [""]
    done = threading.Event()
    start = time.perf_counter()
    env = {**os.environ, "COLUMNS": "400"}  # one log record per line
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)

    def _sample() -> None:
        top = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                tree = [top, *top.children(recursive=True)]
                rss = sum(p.memory_info().rss for p in tree if p.is_running())
                peak[0] = max(peak[0], rss)
                if per_node is not None and current[0]:
                    per_node[current[0]] = max(per_node.get(current[0], 0.0), rss / 1e6)
            except psutil.Error:
                pass
            time.sleep(0.1)

    sampler = threading.Thread(target=_sample, daemon=True)
    sampler.start()
    tail: list[str] = []
    for line in proc.stdout:
        tail = [*tail[-200:], line]
        found = re.search(r"Running node: (\w+)", line)
        if found:
            current[0] = found.group(1)
    proc.wait()
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{''.join(tail)[-3000:]}")
    return time.perf_counter() - start, peak[0] / 1e6


def _project_on(work: Path, sources: int) -> tuple[Path, float]:
    """The ACNE04-shaped export (generated once per ``work``) and a project copy pointed at it."""
    start = time.perf_counter()
    export = work / "export"
    if not (export / ".complete").exists():
        write_acne04_like_export(export, sources=sources)
        (export / ".complete").write_text(str(sources))
    generated = time.perf_counter() - start
    project = work / "project"
    if not project.exists():
        copy_project(project, n_images=0, size=64)
    local = project / "conf" / "local" / "catalog.yml"
    catalog = yaml.safe_load(local.read_text())
    catalog["raw_export"] = {"type": "acne_detection.datasets.AnnotatedExport", "path": str(export), "format": "voc"}
    local.write_text(yaml.safe_dump(catalog))
    return project, generated


def measure_one_process(work: Path, *, sources: int, imgsz: int) -> dict:
    """``kedro run`` (the whole default DAG in one process, as users run it) at 1 epoch of
    ``imgsz``: its peak resident memory, and the peak while each node ran."""
    project, _ = _project_on(work, sources)
    kedro = str(Path(sys.executable).parent / "kedro")
    per_node: dict[str, float] = {}
    params = f"train.epochs=1,train.imgsz={imgsz},preview.samples=4,preview.loss_samples=16"
    took, peak = run_measured([kedro, "run", "--params", params], project, per_node)
    n_photos = 3 * sources + 2
    top = sorted(per_node.items(), key=lambda kv: -kv[1])[:6]
    return {
        "benchmark": f"peak memory of kedro run in one process, {n_photos} photos (ACNE04-shaped)",
        "baseline": "-",
        "baseline_s": None,
        "ours": f"kedro run (data, preview, train 1 epoch at {imgsz} px, eval, register)",
        "ours_s": {"median_s": took, "min_s": took, "max_s": took},
        "ratio": None,
        "note": f"one run; peak {peak:.0f} MB; the nodes of highest peak: "
        + ", ".join(f"{name} {mb:.0f} MB" for name, mb in top),
        "per_node_mb": per_node,
    }


def measure(work: Path, *, sources: int) -> dict:
    """Generate the export, run the four pipelines on it, and return the results row."""
    project, generated = _project_on(work, sources)
    kedro = str(Path(sys.executable).parent / "kedro")
    times, peaks = {}, {}
    for name in PIPELINES:
        times[name], peaks[name] = run_measured([kedro, "run", "--pipeline", name, "--params", TINY], project)
    n_photos = 3 * sources + 2
    counts = yaml.safe_load((project / "data" / "08_reporting" / "ingestion_counts.json").read_text())
    assert counts["images_read"] == counts["images_accepted"] + counts["images_quarantined"] == n_photos, counts
    total = sum(times.values())
    return {
        "benchmark": f"whole DAG on an ACNE04-shaped export, {n_photos} photos at 640 px (tiny training)",
        "baseline": "-",
        "baseline_s": None,
        "ours": "kedro run --pipeline data, preview, train, eval (1 epoch at 64 px)",
        "ours_s": {"median_s": total, "min_s": total, "max_s": total},
        "ratio": None,
        "note": (
            f"one run; {sources} sources x 3 copies, 0-60 lesions each, {counts['boxes_read']} boxes; "
            + ", ".join(f"{n} {times[n]:.0f} s / {peaks[n]:.0f} MB peak" for n in PIPELINES)
            + f"; export generated in {generated:.0f} s (not counted)"
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sources", type=int, default=1000, help="source photos (3 copies each)")
    parser.add_argument("--work", type=Path, help="keep the export and the project here (default: a temp folder)")
    parser.add_argument(
        "--one-process",
        type=int,
        metavar="IMGSZ",
        help="instead: `kedro run` in one process at 1 epoch of IMGSZ px, peak memory per node",
    )
    args = parser.parse_args()

    def _measure(work: Path) -> dict:
        if args.one_process:
            return measure_one_process(work, sources=args.sources, imgsz=args.one_process)
        return measure(work, sources=args.sources)

    if args.work:
        row = _measure(args.work)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            row = _measure(Path(tmp))
    print(row)
    row.pop("per_node_mb", None)
    if args.sources >= 1000:  # a smoke run at a few photos measures nothing worth keeping
        from benchmarks.run import merge_results

        merge_results([row])


if __name__ == "__main__":
    main()
