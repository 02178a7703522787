"""What a user sees when a run cannot start: the cause on one line, above any traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from acne_detection.testing import copy_project
from tests.conftest import PROJECT_ROOT, kedro_run

_kedro = kedro_run


def test_an_empty_export_folder_is_explained_in_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "my-export"
    empty.mkdir()
    project = copy_project(
        tmp_path / "p", n_images=4, size=64, catalog={"raw_export": {"path": str(empty), "synthetic": None}}
    )
    result = _kedro(project, "--pipeline", "data")
    out = result.stdout + result.stderr
    assert result.returncode != 0
    line = next(line for line in out.splitlines() if "The run stopped:" in line)
    assert str(empty) in line and "no photo found in the export folder" in line and "raw_export.path" in line
    assert "Traceback" in out and out.index("The run stopped:") < out.index("Traceback")  # the cause first


def test_a_misspelt_group_on_the_command_line_stops_before_any_node(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "p", n_images=4, size=64)
    result = _kedro(project, "--pipeline", "data", "--params", "dta.strict=true")
    out = result.stdout + result.stderr
    assert result.returncode != 0 and "Unknown parameter group(s) ['dta']" in out
    assert not (project / "data" / "01_raw").exists()  # nothing ran, not even the synthetic export


def test_the_gpu_benchmark_stops_at_once_without_a_gpu() -> None:
    """``make bench-gpu`` on a machine without CUDA: a clear message and a non-zero exit, before any work."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the benchmark would run")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1 and "needs an NVIDIA GPU with CUDA, and torch sees none here" in done.stderr
    assert not (PROJECT_ROOT / "benchmarks" / "RESULTS-gpu.md").exists()
