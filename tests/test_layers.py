"""The layering README's "Layout" promises, held by import-linter's contracts (pyproject.toml,
``[tool.importlinter]``): each contract checked on the package as it is, and each shown to break
when a copy of the package gains the import it forbids."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from importlinter.api import read_configuration

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
PACKAGE = ROOT / "src" / "acne_detection"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

# The contracts issue 35 asks for, by id: one missing from pyproject.toml fails here rather than going unchecked.
CONTRACTS = (
    "core-no-framework",
    "core-self-contained",
    "model-no-kedro",
    "stages-independent",
    "datasets-no-ops",
    "testing-for-tests",
)


def _names() -> dict[str, str]:
    """Each contract's name by id, as pyproject.toml declares them."""
    contracts = read_configuration(str(PYPROJECT))["contracts_options"]
    return {contract["id"]: contract["name"] for contract in contracts}


def _lint(config: Path, contract: str, *, source: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` for one contract, reading the package under ``source`` (a ``src`` folder).

    Args:
        config: the file holding ``[tool.importlinter]``.
        contract: the contract's id.
        source: the folder the package ``acne_detection`` is found in (first on ``PYTHONPATH``).

    Returns:
        The finished process: return code 0 when the contract is kept, 1 when it is broken.
    """
    assert LINT_IMPORTS.exists(), f"{LINT_IMPORTS} is missing: install the test extra (pip install -e '.[test]')"
    # Wide lines: import-linter wraps its report at the terminal's width, which would split an import chain.
    env = {**os.environ, "PYTHONPATH": str(source), "COLUMNS": "300"}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-logo", "--no-cache", "--contract", contract, str(config)],
        cwd=config.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _report(result: subprocess.CompletedProcess[str]) -> str:
    """The report with its whitespace collapsed: a chain reads the same however the terminal wrapped it."""
    return " ".join((result.stdout + result.stderr).split())


def test_every_contract_the_issue_asks_for_is_declared() -> None:
    assert sorted(_names()) == sorted(CONTRACTS)


@pytest.mark.parametrize("contract", CONTRACTS)
def test_contract_is_kept(contract: str) -> None:
    result = _lint(PYPROJECT, contract, source=ROOT / "src")
    assert result.returncode == 0, f"import-linter contract {contract!r} is not kept:\n{result.stdout}{result.stderr}"
    assert f"{_names()[contract]} KEPT" in _report(result)


# An import each contract forbids: (contract, module added to a copy of the package, its source, the chain reported)
BREAKS = [
    (
        "core-no-framework",
        "core/_layer_probe.py",
        "import mlflow\n",
        "acne_detection.core._layer_probe -> mlflow",
    ),
    (  # indirectly, through framework: the chain is followed past the first import
        "core-no-framework",
        "core/_layer_probe.py",
        "from acne_detection.framework import config\n",
        "acne_detection.core._layer_probe -> acne_detection.framework.config",
    ),
    (
        "core-self-contained",
        "core/_layer_probe.py",
        "import acne_detection.ops.tracking_ui\n",
        "acne_detection.core._layer_probe -> acne_detection.ops.tracking_ui",
    ),
    (
        "model-no-kedro",
        "model/_layer_probe.py",
        "import kedro\n",
        "acne_detection.model._layer_probe -> kedro",
    ),
    (
        "stages-independent",
        "pipelines/preview/_layer_probe.py",
        "from acne_detection.pipelines.eval import nodes\n",
        "acne_detection.pipelines.preview._layer_probe -> acne_detection.pipelines.eval.nodes",
    ),
    (
        "datasets-no-ops",
        "datasets/_layer_probe.py",
        "from acne_detection.ops import tracking_ui\n",
        "acne_detection.datasets._layer_probe -> acne_detection.ops.tracking_ui",
    ),
    (
        "testing-for-tests",
        "pipelines/data/_layer_probe.py",
        "from acne_detection import testing\n",
        "acne_detection.pipelines.data._layer_probe -> acne_detection.testing",
    ),
]


@pytest.mark.parametrize(
    ("contract", "module", "source", "chain"), BREAKS, ids=[f"{b[0]}:{b[2].strip()}" for b in BREAKS]
)
def test_contract_breaks_on_a_forbidden_import(
    tmp_path: Path, contract: str, module: str, source: str, chain: str
) -> None:
    src = tmp_path / "src"
    shutil.copytree(PACKAGE, src / "acne_detection", ignore=shutil.ignore_patterns("__pycache__"))
    probe = src / "acne_detection" / module
    assert probe.parent.is_dir(), f"{probe.parent} is missing: the contract names a package that is gone"
    probe.write_text(source)
    config = tmp_path / "pyproject.toml"
    shutil.copyfile(PYPROJECT, config)

    result = _lint(config, contract, source=src)

    report = _report(result)
    assert result.returncode == 1, f"contract {contract!r} was not broken by {module}:\n{result.stdout}{result.stderr}"
    assert f"{_names()[contract]} BROKEN" in report
    assert chain in report, report
