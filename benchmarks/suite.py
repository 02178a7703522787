"""How long the test suite takes: ``make test``'s pytest, timed, its outcome recorded.

``python -m benchmarks.suite [pytest options]`` runs ``python -m pytest`` in the checkout as
``make test`` does (pyproject's options: pytest-xdist on the machine's cores, a file to a worker,
the files' order) and records one row in ``benchmarks/results.json``: the wall time, the counts
of passed, failed and skipped tests, the workers, the order's seed, and whether the tools some
tests need (Label Studio, Chromium, PostgreSQL) were there, since without them those tests skip.
``--serial`` also runs it once without xdist (``-p no:xdist``), the baseline of the ratio. A run
that fails is recorded as failed; it is the docs' source for the suite's time
(``<!-- figures:bench:suite -->``).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(extra: list[str]) -> tuple[float, str, int]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", *extra], cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    sys.stdout.write(done.stdout[-3000:])
    return seconds, done.stdout, done.returncode


def _outcome(output: str, code: int) -> str:
    last = [line for line in output.splitlines() if re.match(r"^=+ .*\d+ (passed|failed)", line)]
    counts = dict(
        (kind, int(n)) for n, kind in re.findall(r"(\d+) (passed|failed|skipped|errors?)", last[-1] if last else "")
    )
    workers = re.search(r"created: (\d+)/\d+ workers", output)
    seed = re.search(r"--randomly-seed=(\d+)", output)
    parts = [", ".join(f"{n} {kind}" for kind, n in counts.items()) or f"no summary (exit {code})"]
    parts.append(f"{workers.group(1)} workers, a file each" if workers else "one process")
    parts.append(f"random order, seed {seed.group(1)}" if seed else "file order")
    return "; ".join(parts) + (f"; exit {code}" if code else "")


def _tools() -> str:
    label_studio = (ROOT / ".venv-labelstudio" / "bin" / "label-studio").exists()
    chromium = shutil.which("chromium") is not None
    postgres = shutil.which("initdb") is not None or any(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return f"Label Studio {'yes' if label_studio else 'no'}, Chromium {'yes' if chromium else 'no'}, " + (
        f"PostgreSQL {'yes' if postgres else 'no'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--serial", action="store_true", help="also run it in one process, the baseline")
    args, extra = parser.parse_known_args()
    baseline = None
    if args.serial:
        seconds, output, code = _run([*extra, "-p", "no:xdist"])
        baseline = {"median_s": seconds, "min_s": seconds, "max_s": seconds, "outcome": _outcome(output, code)}
    seconds, output, code = _run(extra)
    note = f"{_outcome(output, code)}; tools: {_tools()}"
    if baseline:
        note += f"; baseline: {baseline.pop('outcome')}"
    slowest = re.findall(r"^([\d.]+)s (setup|call|teardown) +(\S+)", output, flags=re.MULTILINE)
    if slowest:
        note += "; slowest: " + ", ".join(
            f"{test.split('::')[-1]} ({phase}) {float(s):.0f} s" for s, phase, test in slowest[:3]
        )
    row = {
        "benchmark": "suite: python -m pytest, as make test runs it",
        "baseline": "the same suite in one process (-p no:xdist)" if baseline else "-",
        "baseline_s": baseline,
        "ours": "pytest-xdist (-n auto: cores + 1, at most 4), --dist loadfile",
        "ours_s": {"median_s": seconds, "min_s": seconds, "max_s": seconds},
        "ratio": seconds / baseline["median_s"] if baseline else None,
        "note": note,
        "slowest": [{"seconds": float(s), "phase": phase, "test": test} for s, phase, test in slowest],
    }
    print(row)
    from benchmarks.run import merge_results

    merge_results([row])
    sys.exit(code)


if __name__ == "__main__":
    main()
