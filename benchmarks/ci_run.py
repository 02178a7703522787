"""What CI costs: ``.ci/run`` on a fresh clone of the checkout's HEAD, timed step by step.

``python -m benchmarks.ci_run [--shuffle]`` clones the commit into a temporary folder (with
``../shared`` linked beside it where the checkout has one, as CI has), runs ``.ci/run`` there as CI
does, and records one row in ``benchmarks/results.json``: the whole run's wall time, each step's
(``.ci/run`` prints ``ci-step: NAME done at S s``), and the suite's outcome. ``--shuffle`` runs the
suite in a random order (``PYTEST_ADDOPTS=-p randomly``; its seed is recorded): the periodic check
that the suite passes in any order. The clone is removed afterwards; a run that fails is recorded
as failed. It is the docs' source for CI's time (``<!-- figures:bench:suite -->``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LABELS = {"make test": "make test (ruff and the suite)"}  # what a step's time covers, where its name does not say


def steps(output: str) -> list[tuple[str, float]]:
    """Each step's name and its own seconds, from ``.ci/run``'s ``ci-step`` lines."""
    ends = [(name, float(s)) for name, s in re.findall(r"^ci-step: (.+) done at (\d+) s$", output, re.MULTILINE)]
    return [(name, end - (ends[i - 1][1] if i else 0.0)) for i, (name, end) in enumerate(ends)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shuffle", action="store_true", help="the suite in a random order (pytest-randomly)")
    parser.add_argument("--keep", action="store_true", help="keep the clone (its path is printed)")
    args = parser.parse_args()
    from benchmarks.suite import _outcome

    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
    top = Path(tempfile.mkdtemp(prefix="acne-ci-"))
    clone = top / ROOT.name
    try:
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        subprocess.run(["git", "checkout", "-q", commit.stdout.strip()], cwd=clone, check=True)
        if (ROOT.parent / "shared").is_dir():
            (top / "shared").symlink_to(ROOT.parent / "shared")
        env = dict(os.environ)
        env.pop("VIRTUAL_ENV", None)
        if args.shuffle:
            env["PYTEST_ADDOPTS"] = (env.get("PYTEST_ADDOPTS", "") + " -p randomly").strip()
        start = time.perf_counter()
        done = subprocess.run(
            ["bash", ".ci/run"], cwd=clone, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        seconds = time.perf_counter() - start
        sys.stdout.write(done.stdout[-4000:])
        timed = steps(done.stdout)
        note = (
            f"{_outcome(done.stdout, done.returncode)}; steps: "
            + ", ".join(f"{LABELS.get(name, name)} {s:.0f} s" for name, s in timed)
            + "; a fresh clone"
            + (", ../shared beside it" if (top / "shared").exists() else "")
        )
        row = {
            "benchmark": "suite: .ci/run on a fresh clone" + (", the suite in random order" if args.shuffle else ""),
            "baseline": "-",
            "baseline_s": None,
            "ours": ".ci/run: system packages, Label Studio, a tiny kedro run, the test install, make test",
            "ours_s": {"median_s": seconds, "min_s": seconds, "max_s": seconds},
            "ratio": None,
            "note": note,
        }
        print(row)
        from benchmarks.run import merge_results

        merge_results([row])
        sys.exit(done.returncode)
    finally:
        if args.keep:
            print(f"the clone: {clone}")
        else:
            shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
