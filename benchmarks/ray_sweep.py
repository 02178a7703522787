"""What Ray Tune costs the sweep: ``kedro run --pipeline sweep`` over two tiny recipes, trained one
after another in the run's own process (``sweep.use_ray: false``, what runs without the ``ray``
extra) against Ray Tune trials on a local instance (one CPU each, so two at once on two cores).
At this size training is short, so the ratio shows Ray's fixed cost: starting the instance,
a fresh process per trial that imports torch and Ultralytics, Tune's bookkeeping.

``python -m benchmarks.ray_sweep [--repeats 3]`` (a few minutes on 2 cores: the data pipeline
once, then the sweep ``2 x repeats`` times, alternating, each into a fresh recipe folder so no
recipe is reused). The row goes into ``benchmarks/RESULTS.md`` through ``benchmarks.run.merge_results``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from acne_detection.testing import copy_project
from benchmarks.run import merge_results

N_IMAGES, SIZE = 24, 128
RECIPES = {
    "sweep": {
        "budget_minutes": 60,
        "checkpoint_every": 1,
        "resources": {"cpus": 1, "gpus": 0},
        "configs": [{"name": "sgd"}, {"name": "adamw", "train": {"optimizer": "AdamW", "lr0": 0.001}}],
    }
}
TINY = {"train": {"epochs": 2, "imgsz": 64, "batch": 8, "augment": {"close_mosaic": 0}}}


def _sweep(project: Path, kedro: str, *, use_ray: bool, run: int) -> float:
    """Seconds of one ``kedro run --pipeline sweep``, its recipes into a folder of their own."""
    params = f"sweep.use_ray={str(use_ray).lower()},sweep.workdir=data/06_models/sweep-{use_ray}-{run}"
    start = time.perf_counter()
    done = subprocess.run(
        [kedro, "run", "--pipeline", "sweep", "--params", params], cwd=project, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"the sweep (use_ray={use_ray}) failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return seconds


def _summary(times: list[float]) -> dict[str, float]:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    kedro = str(Path(sys.executable).parent / "kedro")
    times: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        project = copy_project(Path(tmp) / "project", n_images=N_IMAGES, size=SIZE)
        (project / "conf" / "local" / "parameters_sweep.yml").write_text(yaml.safe_dump(RECIPES))
        (project / "conf" / "local" / "parameters_train.yml").write_text(yaml.safe_dump(TINY))
        subprocess.run([kedro, "run", "--pipeline", "data"], cwd=project, capture_output=True, check=True)
        for run in range(args.repeats):
            for use_ray in (False, True) if run % 2 == 0 else (True, False):
                times[use_ray].append(_sweep(project, kedro, use_ray=use_ray, run=run))
                print(f"use_ray={use_ray}: {times[use_ray][-1]:.1f} s", flush=True)
    base, ours = _summary(times[False]), _summary(times[True])
    row = {
        "benchmark": f"sweep of 2 tiny recipes ({TINY['train']['epochs']} epochs at 64 px, {N_IMAGES} photos)",
        "baseline": "kedro run --pipeline sweep, recipes one after another in its process (sweep.use_ray: false)",
        "baseline_s": base,
        "ours": "the same on Ray Tune, a local instance, 1 CPU per trial (both at once)",
        "ours_s": ours,
        "ratio": ours["median_s"] / base["median_s"],
        "note": f"median of {args.repeats} each, alternating; Ray's fixed cost at this size "
        f"{ours['median_s'] - base['median_s']:+.1f} s ({os.cpu_count()} cores)",
    }
    print(row)
    merge_results([row])


if __name__ == "__main__":
    main()
