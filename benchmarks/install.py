"""What each install costs: the venv ``make run`` builds (the runtime alone) and the one ``make test``
builds (every extra the suite needs), as package count, size on disk and install time.

``python -m benchmarks.install`` (about 5 minutes; needs about 15 GB free in the temporary
folder) creates a fresh venv in a temporary folder, runs ``make run``'s install into it
(``pip install -e .``), measures it, then ``make test``'s (``pip install -e ".[test,...]"``) on
top, as the Makefile does, and measures again. pip's cache is not used (``--no-cache-dir``), so
every package is fetched from the configured index as on a fresh machine; where the index is a
local mirror (as on the project's own machines) the time is shorter than over a network. The
rows go into ``benchmarks/RESULTS.md`` through ``benchmarks.run.merge_results``, and from there
into the docs' generated tables (``<!-- figures:bench:install -->``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_EXTRAS = re.search(r"pip install -e \"\.\[([\w,]+)\]\"", (ROOT / "Makefile").read_text())
TEST_TOOLS = ("pytest", "playwright", "hypothesis", "netcal")  # what a runtime venv must not hold


def _size(folder: Path) -> int:
    return sum(p.lstat().st_size for p in folder.rglob("*") if not p.is_symlink() and p.is_file())


def _packages(python: Path) -> list[str]:
    out = subprocess.run([str(python), "-m", "pip", "list", "--format", "json"], capture_output=True, text=True)
    out.check_returncode()
    return sorted(p["name"].lower() for p in json.loads(out.stdout))


def _install(python: Path, target: str) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-cache-dir", "-q", "-e", target],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise RuntimeError(f"pip install -e {target} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def measure(work: Path) -> list[dict]:
    """Both venvs' rows, built in ``work``."""
    if TEST_EXTRAS is None:
        raise RuntimeError("the Makefile's test install line was not found")
    venv = work / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", str(venv)], check=True)  # noqa: SLF001 - not this venv's
    python = venv / "bin" / "python"
    rows = []
    how = {".": "a fresh venv, pip's cache unused"}
    for what, target in (
        ("runtime venv (make run: pip install -e .)", "."),
        (f"test venv (make test: pip install -e .[{TEST_EXTRAS.group(1)}])", f".[{TEST_EXTRAS.group(1)}]"),
    ):
        seconds = _install(python, target)
        packages = _packages(python)
        tools = [t for t in TEST_TOOLS if t in packages]
        gigabytes = _size(venv) / 1e9
        rows.append(
            {
                "benchmark": f"install: {what}",
                "baseline": "-",
                "baseline_s": None,
                "ours": how.get(target, "the extras on top of the runtime venv (their time alone)"),
                "ours_s": {"median_s": seconds, "min_s": seconds, "max_s": seconds},
                "ratio": None,
                "note": f"{len(packages)} packages, {gigabytes:.1f} GB on disk; "
                + ("test tools in it: " + ", ".join(tools) if tools else "no " + ", ".join(TEST_TOOLS)),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="acne-install-") as tmp:
        rows = measure(Path(tmp))
    from benchmarks.run import merge_results

    merge_results(rows)


if __name__ == "__main__":
    os.environ.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    main()
