"""Benchmark entry points at their smallest size, so a command the README names cannot rot unseen
(``make bench-quick`` once failed at main for weeks: its hand-built catalog missed new inputs).
A smoke run measures nothing; the figures come from the full runs in ``benchmarks/RESULTS.md``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT


def _module(*args: str, cwd: Path = PROJECT_ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=900)


def test_bench_quick_ingestion_runs_the_data_pipeline(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    done = _module(
        "benchmarks.run", "--quick", "--only", "ingestion", "--repeats", "1", "--work", str(tmp_path), "--out", str(out)
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| ingestion, 200 photos | cp -r of the export |" in done.stdout
    assert (
        "| ingestion, 200 photos | cp -r of the export |" in (out / "RESULTS-quick.md").read_text()
    )  # not the checkout's


@pytest.mark.e2e
def test_scale_benchmark_runs_the_whole_dag_on_an_acne04_shaped_export(tmp_path: Path) -> None:
    done = _module("benchmarks.scale", "--sources", "4", "--work", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "14 photos at 640 px" in done.stdout  # 4 sources x 3 copies + 2 broken files
    for name in ("data", "preview", "train", "eval"):
        assert re.search(rf"{name} \d+ s / \d+ MB peak", done.stdout), name
    quarantine = (tmp_path / "project" / "data" / "08_reporting" / "quarantine_report.csv").read_text()
    assert "zero-byte file" in quarantine and "the file starts with text" in quarantine
    # the one-process mode on the same export: `kedro run` whole, the peak memory while each node ran
    done = _module("benchmarks.scale", "--sources", "4", "--work", str(tmp_path), "--one-process", "64")
    assert done.returncode == 0, done.stderr[-3000:]
    peaks = re.search(r"peak (\d+) MB; the nodes of highest peak: (.*?)'", done.stdout)
    assert peaks and int(peaks.group(1)) >= max(int(mb) for mb in re.findall(r" (\d+) MB", peaks.group(2)))
    assert "'train_detector':" in done.stdout and "'predict_test_split':" in done.stdout  # every node measured


@pytest.mark.e2e
def test_serve_load_benchmark_answers_good_and_bad_requests(tmp_path: Path) -> None:
    """`make bench-serve` at its smallest: 12 requests (one of them bad) and one phone photo."""
    done = _module(
        "benchmarks.serve_load",
        *("--clients", "2", "--requests", "12", "--phone", "1", "--rounds", "1"),
        *("--soak", "40", "--work", str(tmp_path)),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "12 requests of a 640 px photo (1 of them bad)" in done.stdout
    assert re.search(r"p50/p95/p99 [\d.]+/[\d.]+/[\d.]+ s, 0 errors; 1 phone photos", done.stdout), done.stdout
    assert re.search(r"server memory \d+ MB before, \d+ MB peak, \d+ MB after each of 1 rounds \(0 errors", done.stdout)
    soak = re.search(r"peaks per 10 requests ((?:\d+, ){3}\d+) MB: last/first ([\d.]+)", done.stdout)
    assert soak, done.stdout  # the soak: 40 requests, the server's peak over each quarter
    first, *_, last = (int(mb) for mb in soak.group(1).split(", "))
    assert abs(float(soak.group(2)) - last / first) < 0.01
    assert re.search(r"s, 0 errors \(every 10th request bad", done.stdout)


def test_the_soak_row_renders_in_results_md_without_a_time() -> None:
    """The soak's row is a memory ratio with no time of its own (the full run's table failed on it)."""
    from benchmarks.run import _markdown
    from benchmarks.serve_load import soak_row

    soaked = {"requests": 2000, "window": 500, "peaks_mb": [1817.0, 1776.0, 1776.0, 1790.0], "growth": 0.985}
    soaked |= {"rps": 39.8, "p50": 0.11, "p99": 0.15, "errors": 0}
    table = _markdown(
        [soak_row(soaked, 4) | {"commit": "abc1234"}], {"mode": "full", "machine": "m", "date": "d", "commit": "-"}
    )
    row = table.splitlines()[-1].split(" | ")
    assert row[4:6] == ["-", "0.98"] and "last/first 0.985 (flat, within 5 %)" in row[6], row


@pytest.mark.e2e
def test_predict_benchmark_measures_every_runtime_with_and_without_skipping(tmp_path: Path) -> None:
    """`python -m benchmarks.predict --quick` with the COCO weights (no training data: INT8 is
    skipped, and says so): each set's slicing row and the runtimes' rows, and memory per runtime."""
    import shutil

    import yaml

    from acne_detection.datasets import PretrainedWeightsSource

    base = yaml.safe_load((PROJECT_ROOT / "conf" / "base" / "catalog.yml").read_text())["pretrained_weights"]
    cache = tmp_path / "cache" / "yolov8n.pt"
    source = PretrainedWeightsSource(
        **{**{k: v for k, v in base.items() if k != "type"}, "cache": str(cache), "try_download": False}
    )
    weights = tmp_path / "yolov8n.pt"
    shutil.copy(source.load().resolve()[0], weights)
    done = _module("benchmarks.predict", "--quick", "--model", str(weights), "--data", str(tmp_path / "none.yaml"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "openvino-int8 skipped: no training data.yaml" in done.stderr
    for name in ("(a) full-frame skin", "(b) half background"):
        assert f'"sliced inference on phone photos {name}"' in done.stdout
        for runtime in ("torch, skipping background", "onnx", "openvino, skipping background"):
            assert f'"sliced phone photo {name}: {runtime}"' in done.stdout
    assert done.stdout.count('"4 photos":') == 3  # torch, onnx, openvino
    assert "1 photos 1200x1600" in done.stdout


def test_ci_steps_printed_by_ci_run_are_read_back_as_each_steps_own_seconds() -> None:
    from benchmarks.ci_run import steps

    step = next(line for line in (PROJECT_ROOT / ".ci" / "run").read_text().splitlines() if line.startswith("step()"))
    named = re.findall(r'^step "([^"]+)"$', (PROJECT_ROOT / ".ci" / "run").read_text(), flags=re.MULTILINE)
    assert named[-1] == "make test" and len(named) == 5
    script = f'{step}\nSECONDS=3; step "one"\nSECONDS=10; step "two two"\nSECONDS=10; step "three"'
    printed = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
    assert steps(printed) == [("one", 3.0), ("two two", 7.0), ("three", 0.0)]
