"""``kedro run --env acne04`` for real but tiny, on the real ACNE04 sample: a single-class
``lesion`` detector, graded against the grades in the file names; and the label audit of the
same sample read with the 4-class map warns through the real ``data`` pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from acne_detection.testing import copy_project
from tests.conftest import kedro_run

_kedro = kedro_run


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = copy_project(tmp_path_factory.mktemp("acne04") / "acne-detection", n_images=4, size=64)
    return root


@pytest.mark.e2e
@pytest.mark.shared_data
def test_acne04_env_trains_one_class_and_grades_from_file_names(project: Path, acne04_sample: Path) -> None:
    catalog = project / "conf" / "acne04" / "catalog.yml"
    entry = yaml.safe_load(catalog.read_text())
    entry["raw_export"]["path"] = str(acne04_sample)
    catalog.write_text(yaml.safe_dump(entry))
    result = _kedro(
        project, "--env", "acne04", "--params", "train.epochs=1,train.imgsz=64,train.batch=8,preview.samples=2"
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    data = project / "data"
    assert (data / "05_model_input" / "yolo" / "data.yaml").read_text().count("lesion") == 1
    truth = pd.read_csv(data / "05_model_input" / "ground_truth.csv")
    assert set(truth["class"]) == {"lesion"}
    audit = json.loads((data / "08_reporting" / "label_audit.json").read_text())
    assert audit["status"] == "handled" and "levleN" in audit["message"]
    grades = pd.read_csv(data / "07_model_output" / "test_grades.csv")
    split = pd.read_csv(data / "03_primary" / "split_manifest.csv")
    assert len(grades) == (split.split == "test").sum() > 0
    expected = grades.image_id.str.extract(r"levle(\d)")[0].astype(int)
    assert grades.true_grade.tolist() == expected.tolist()
    metrics = json.loads((data / "08_reporting" / "grading_metrics.json").read_text())
    ceiling = (grades.count_grade == grades.true_grade).mean()
    assert metrics["grade_ceiling"] == pytest.approx(ceiling) and metrics["photos_graded"] == len(grades)
    # each test photo names its source photo (Roboflow's copies share one), and the interval counts sources
    sources = grades.image_id.str.split("/").str[-1].str.split("_jpg.rf.").str[0]
    assert grades.source.tolist() == sources.tolist()
    assert metrics["grade_sources"] == sources.nunique()
    summary = (data / "08_reporting" / "results_summary.md").read_text()
    assert "| lesion |" in summary and "Severity grading" in summary
    # the model card names the real export and the label audit's verdict, and no synthetic warning
    card = (data / "06_models" / "model_card.md").read_text()
    assert card.startswith(f"**Acne lesion detector trained on {len(split)} real photos of the `{acne04_sample.name}`")
    assert "Label audit: **handled**" in card and "synthetic" not in card.split("\n")[0]


@pytest.mark.shared_data
def test_acne04_read_with_the_four_class_map_warns_through_the_data_pipeline(
    project: Path, acne04_sample: Path
) -> None:
    local = project / "conf" / "local" / "catalog.yml"
    entry = yaml.safe_load(local.read_text())
    entry["raw_export"] = {**entry["raw_export"], "path": str(acne04_sample), "synthetic": None}
    local.write_text(yaml.safe_dump(entry))
    result = _kedro(project, "--pipeline", "data")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    flat = " ".join(out.split())  # the log wraps long lines
    assert "WARNING Label audit: class names look like IMAGE-LEVEL labels" in flat
    assert "levleN determines the class" in flat
    assert json.loads((project / "data" / "08_reporting" / "label_audit.json").read_text())["status"] == "warning"
