"""The docs site builds with ``mkdocs build --strict`` (a broken link or anchor fails it), every
page is in its navigation, and the README stays a newcomer's door (at most 250 lines, every link
to a docs page that exists)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import PROJECT_ROOT


def _mkdocs() -> list[str]:
    if shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None:
        if os.environ.get("CI"):
            pytest.fail("mkdocs is not installed: make test installs the docs extra")
        pytest.skip("mkdocs is not installed here (pip install -e '.[docs]')")
    return [str(Path(sys.executable).parent / "mkdocs"), "build", "--strict"]


def _build(root: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run(
        [*_mkdocs(), "--site-dir", str(site)], cwd=root, capture_output=True, text=True, env=env, timeout=300
    )


def test_the_docs_build_strict_and_every_page_is_in_the_navigation(tmp_path: Path) -> None:
    done = _build(PROJECT_ROOT, tmp_path / "site")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "for-clinicians" / "index.html").is_file()
    nav = yaml.safe_load((PROJECT_ROOT / "mkdocs.yml").read_text())["nav"]
    listed = {page for entry in nav for page in entry.values()}
    assert listed == {p.name for p in (PROJECT_ROOT / "docs").glob("*.md")}


def test_a_broken_link_fails_the_build(tmp_path: Path) -> None:
    copy = tmp_path / "project"
    shutil.copytree(PROJECT_ROOT / "docs", copy / "docs")
    shutil.copy(PROJECT_ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    page = copy / "docs" / "grading.md"
    page.write_text(
        page.read_text() + "\nSee [the missing page](no-such-page.md) and [here](calibration.md#no-anchor).\n"
    )
    done = _build(copy, tmp_path / "site")
    assert done.returncode != 0 and "no-such-page.md" in done.stderr


def test_the_readme_is_short_and_links_only_to_pages_that_exist() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    for target in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (PROJECT_ROOT / target).is_file(), target
    for command in ("make run", "make test", "make predict", "make docs"):
        assert command in readme


def test_every_make_target_is_in_make_help() -> None:
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, flags=re.M))
    done = subprocess.run(["make", "--no-print-directory", "help"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    listed = set(re.findall(r"^  make (\S+)", done.stdout, flags=re.M))
    assert targets and targets == listed, f"not in make help: {sorted(targets - listed)}"
