"""The review loop on real parts: a real Label Studio (its own venv, ``.ci/run`` installs it), a
real tiny model pre-annotating real photos, a real browser opening a task, a review done
through Label Studio's API, read back by the data pipeline and trained on."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from acne_detection.core.review import region_boxes
from acne_detection.datasets import AnnotatedExport
from acne_detection.datasets.label_studio import LabelStudioClient
from acne_detection.ops.label_studio import ADMIN_EMAIL, LabelStudioHome, wait_until_up
from acne_detection.testing import PROJECT_ROOT, copy_project, free_port, stop_process_tree
from tests.conftest import chromium, kedro_run

pytestmark = pytest.mark.e2e
TINY = "train.epochs=1,train.imgsz=64,train.batch=8,preview.samples=4,preview.loss_samples=8"
# four boxes a photo: enough to keep, move and delete some (a 1-epoch model's confidences are low)
PREANNOTATE = "predict.max_det=4,predict.threshold=0.001"


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory: pytest.TempPathFactory):
    venv = PROJECT_ROOT / ".venv-labelstudio"
    if not (venv / "bin" / "label-studio").exists():
        message = "Label Studio is not installed in .venv-labelstudio (make labelstudio-install)"
        if os.environ.get("CI"):
            pytest.fail(message + ": .ci/run must install it")
        pytest.skip(message)
    root, photos = tmp_path_factory.mktemp("labelstudio"), tmp_path_factory.mktemp("document_root")
    home = LabelStudioHome(root=root, venv=venv)
    url = f"http://127.0.0.1:{free_port()}"
    server = home.start(port=int(url.rsplit(":", 1)[1]), document_root=photos)
    try:
        wait_until_up(url, server)
        home.token(photos)
        for secret in (home.token_file, home.password_file):  # generated, owner-only, never printed
            assert secret.stat().st_mode & 0o777 == 0o600
        yield SimpleNamespace(url=url, home=home, document_root=photos)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        stop_process_tree(server, timeout=60)  # and anything it started outside its process group


@pytest.fixture(scope="module")
def reviewed_project(tmp_path_factory: pytest.TempPathFactory, label_studio) -> SimpleNamespace:
    """A trained tiny project pre-annotating five new photos (under Label Studio's document
    root) into a Label Studio project; then one photo reviewed with edits, two accepted as
    they are, one skipped, one left."""
    ls = label_studio
    project = copy_project(
        tmp_path_factory.mktemp("review") / "acne-detection",
        n_images=24,
        size=128,
        catalog={
            "label_studio_project": {"url": ls.url, "token_file": str(ls.home.token_file)},
            "new_photos": {
                "type": "acne_detection.datasets.PhotoFolder",
                "path": str(ls.document_root / "clinic"),
                "synthetic": {"n_small": 5, "n_phone": 0, "seed": 3},
            },
        },
    )
    (project / "conf" / "local" / "parameters_review.yml").write_text(
        yaml.safe_dump({"review": {"document_root": str(ls.document_root)}})
    )
    assert kedro_run(project, "--params", TINY).returncode == 0
    done = kedro_run(project, "--pipeline", "review", "--params", PREANNOTATE)
    assert done.returncode == 0, done.stderr[-3000:]
    client = LabelStudioClient(ls.url, ls.home.token_file.read_text().strip())
    project_id = client.project_by_title("acne review")["id"]
    tasks = sorted(client.tasks(project_id), key=lambda t: t["data"]["photo"])
    return SimpleNamespace(path=project, client=client, project_id=project_id, tasks=tasks, ls=ls)


def _lesions(project: Path) -> pd.DataFrame:
    return pd.read_csv(project / "data" / "07_model_output" / "predictions" / "lesions.csv")


def test_the_model_preannotates_each_photo_with_its_boxes_grade_and_version(reviewed_project) -> None:
    p = reviewed_project
    summary = pd.read_csv(p.path / "data" / "07_model_output" / "predictions" / "summary.csv")
    model = json.loads((p.path / "data" / "07_model_output" / "predictions" / "model.json").read_text())
    assert [t["data"]["photo"] for t in p.tasks] == sorted("clinic/" + summary.photo)
    lesions = _lesions(p.path)
    for task in p.tasks:
        (prediction,) = task["predictions"]
        assert prediction["model_version"] == model["model_version"] != ""
        photo = task["data"]["photo"].removeprefix("clinic/")
        assert task["data"]["image"] == f"/data/local-files/?d=clinic/{photo}"  # served from its folder
        boxes = region_boxes(prediction["result"]).sort_values("id", key=lambda s: s.str[1:].astype(int))
        expected = lesions[lesions.image == photo]
        assert len(boxes) == len(expected) == 4
        # percent of the photo and back: the same pixels, the same class and confidence
        corners = ["x_min", "y_min", "x_max", "y_max"]
        assert abs(boxes[corners].to_numpy() - expected[corners].to_numpy()).max() < 1e-6
        assert boxes["class"].tolist() == expected["class"].tolist()
        assert abs(boxes.confidence.to_numpy() - expected.confidence.to_numpy()).max() < 1e-9
        grade = next(r for r in prediction["result"] if r["from_name"] == "grade")["value"]["choices"]
        assert grade == [str(int(summary.set_index("photo").loc[photo, "grade"]))]
    config = p.client.request("GET", f"/api/projects/{p.project_id}")["label_config"]
    for name in ("comedone", "papule", "pustule", "nodule", "mild", "very severe", "TextArea"):
        assert name in config


def test_the_cvat_file_reads_back_as_coco(reviewed_project, tmp_path: Path) -> None:
    """The CVAT file (COCO 1.0) beside the photos, read by the project's own COCO reader."""
    import shutil

    from acne_detection.datasets.readers import read_coco

    folder = tmp_path / "cvat"
    shutil.copytree(reviewed_project.ls.document_root / "clinic", folder)
    shutil.copy(reviewed_project.path / "data" / "07_model_output" / "review" / "cvat_coco_1.0.json", folder)
    images, boxes, problems = read_coco(folder)
    lesions = _lesions(reviewed_project.path)
    assert len(images) == 5 and problems.empty
    assert len(boxes) == len(lesions)
    got = boxes.sort_values(["image_id", "x_min"])[["x_min", "y_min"]].to_numpy()
    want = lesions.sort_values(["image", "x_min"])[["x_min", "y_min"]].to_numpy()
    assert abs(got - want).max() < 0.01  # two decimals in the file


def _redrawn(value: dict) -> dict:
    """A reviewer's redrawing of a box: its top-left half (a quarter of its area, inside the photo)."""
    return {**value, "width": value["width"] / 2, "height": value["height"] / 2}


def _review(client: LabelStudioClient, task: dict, *, edit: bool) -> None:
    """A reviewer's submission through the API: as the UI does, the prediction's regions are
    copied with their ids; with ``edit``, the first box redrawn (IoU 0.25 with the model's),
    the second deleted, a small box added, and the grade changed."""
    result = [dict(r) for r in task["predictions"][0]["result"]]
    if edit:
        moved = dict(result[0], value=_redrawn(result[0]["value"]))
        added = dict(
            result[2], id="added1", value={**result[2]["value"], "x": 5.0, "y": 5.0, "width": 4.0, "height": 3.0}
        )
        grade = next(r for r in result if r["from_name"] == "grade")
        other = str((int(grade["value"]["choices"][0]) + 1) % 4)
        result = [moved, result[2], result[3], added, dict(grade, value={"choices": [other]})]
    client.request("POST", f"/api/tasks/{task['id']}/annotations/", json={"result": result, "was_cancelled": False})


@pytest.fixture(scope="module")
def reviews(reviewed_project) -> SimpleNamespace:
    p = reviewed_project
    edited, kept_1, kept_2, skipped, _left = p.tasks
    _review(p.client, edited, edit=True)
    _review(p.client, kept_1, edit=False)
    _review(p.client, kept_2, edit=False)
    p.client.request("POST", f"/api/tasks/{skipped['id']}/annotations/", json={"result": [], "was_cancelled": True})
    again = kedro_run(p.path, "--pipeline", "review", "--params", PREANNOTATE)  # the same folder, once more
    assert again.returncode == 0 and "0 new photos pre-annotated, 5 already there" in again.stdout + again.stderr
    done = kedro_run(p.path, "--pipeline", "reviewed")
    assert done.returncode == 0, done.stderr[-3000:]
    return SimpleNamespace(edited=edited, skipped=skipped)


def test_a_rerun_adds_nothing_and_keeps_the_reviews(reviewed_project, reviews) -> None:
    p = reviewed_project
    tasks = p.client.tasks(p.project_id)
    assert len(tasks) == 5
    edited = next(t for t in tasks if t["id"] == reviews.edited["id"])
    assert len(edited["annotations"]) == 1 and len(edited["predictions"]) == 1
    assert any(r["id"] == "added1" for r in edited["annotations"][0]["result"])


def test_the_review_counts_each_edit_exactly(reviewed_project, reviews) -> None:
    import mlflow

    p = reviewed_project
    edits = pd.read_csv(p.path / "data" / "08_reporting" / "review_edits.csv").set_index("task_id")
    assert sorted(edits.index) == sorted(t["id"] for t in p.tasks[:3])  # the skipped and the left are not reviews
    row = edits.loc[reviews.edited["id"]]
    assert (row.predicted, row.reviewed, row.kept, row.moved, row.deleted, row.added) == (4, 4, 2, 1, 1, 1)
    assert row.grade_before != row.grade_after and row.annotator == ADMIN_EMAIL
    others = edits.drop(index=reviews.edited["id"])
    assert (others.kept == 4).all() and (others[["moved", "deleted", "added"]] == 0).all().all()
    # the model's hits, by IoU >= 0.5 against the reviewer's boxes (at most 3 of 4 on the edited photo)
    metrics = json.loads((p.path / "data" / "08_reporting" / "review_metrics.json").read_text())
    assert metrics["moved"] == 1 and metrics["added"] == 1 and metrics["deleted"] == 1
    assert row.true_positives <= 3 and metrics["precision"] == pytest.approx((4 + 4 + row.true_positives) / 12)
    assert metrics["grade_changed"] == pytest.approx(1 / 3)
    mlflow.set_tracking_uri(f"sqlite:///{p.path / 'data' / 'mlflow' / 'mlflow.db'}")
    run = mlflow.search_runs(
        search_all_experiments=True, filter_string="metrics.`review.moved` = 1", output_format="list"
    )
    assert len(run) == 1 and run[0].info.run_name.startswith("reviewed")


def test_the_reviewed_export_reads_back_with_the_reviewers_boxes_grades_and_provenance(
    reviewed_project, reviews
) -> None:
    p = reviewed_project
    raw = AnnotatedExport(
        path=str(p.path / "data" / "01_raw" / "reviewed"), format="label_studio", photo_root=str(p.ls.document_root)
    ).load()
    assert len(raw.images) == 3 and (raw.images.image_problem == "").all()
    skipped = raw.problems[raw.problems.reason == "not reviewed"].detail.tolist()
    assert sorted(skipped) == sorted(
        [f"task {reviews.skipped['id']}: skipped by the reviewer", f"task {p.tasks[4]['id']}: not reviewed yet"]
    )
    edited_id = reviews.edited["data"]["photo"]
    boxes = raw.boxes[raw.boxes.image_id == edited_id].sort_values("x_min")
    lesions = _lesions(p.path)
    original = lesions[lesions.image == edited_id.removeprefix("clinic/")].reset_index(drop=True)
    first = reviews.edited["predictions"][0]["result"][0]
    redrawn = _redrawn(first["value"])
    right_px = (redrawn["x"] + redrawn["width"]) * first["original_width"] / 100
    assert len(boxes) == 4 and abs(right_px - original.x_max[0]) > 1
    assert ((boxes.x_max - right_px).abs() < 1e-6).sum() == 1  # the redrawn box, in the photo's pixels
    grade = raw.grades.set_index("image").loc[edited_id, "grade"]
    before = next(r for r in reviews.edited["predictions"][0]["result"] if r["id"] == "grade")["value"]["choices"][0]
    assert grade == str((int(before) + 1) % 4)  # the reviewer's grade, not the model's
    assert set(raw.provenance.annotator) == {ADMIN_EMAIL} and raw.provenance.model_version.str.len().min() > 0


def test_training_on_the_export_plus_reviews_logs_which_reviewed_photos_it_saw(reviewed_project, reviews) -> None:
    import mlflow

    p = reviewed_project
    catalog = yaml.safe_load((p.path / "conf" / "local" / "catalog.yml").read_text())
    catalog["raw_export"]["reviewed"] = {"path": "data/01_raw/reviewed", "photo_root": str(p.ls.document_root)}
    (p.path / "conf" / "local" / "catalog.yml").write_text(yaml.safe_dump(catalog))
    done = kedro_run(p.path, "--params", TINY)
    assert done.returncode == 0, done.stderr[-3000:]
    counts = json.loads((p.path / "data" / "08_reporting" / "ingestion_counts.json").read_text())
    assert counts["images_read"] == 24 + 3 == counts["images_accepted"] + counts["images_quarantined"]
    quarantine = pd.read_csv(p.path / "data" / "08_reporting" / "quarantine_report.csv", keep_default_na=False)
    assert not quarantine.image_id.str.startswith("reviewed/").any()  # the reviews pass every check
    mlflow.set_tracking_uri(f"sqlite:///{p.path / 'data' / 'mlflow' / 'mlflow.db'}")
    last = mlflow.search_runs(search_all_experiments=True, order_by=["start_time DESC"], output_format="list")[0]
    inputs = {d.dataset.name: d for d in last.inputs.dataset_inputs}
    assert "reviewed" in inputs and json.loads(inputs["reviewed"].dataset.profile)["num_rows"] == 3
    assert last.info.status == "FINISHED" and "train.epochs" in last.data.params


def test_a_real_browser_logged_in_shows_the_preannotated_boxes(reviewed_project) -> None:
    """Chromium (Debian's, driven by Playwright) logs in as the reviewer and opens a task: the
    page draws the photo served from its folder and lists the model's boxes as regions."""
    from playwright.sync_api import expect, sync_playwright

    p = reviewed_project
    task = p.tasks[4]  # the one left for review
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=chromium(), args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page()
            page.goto(f"{p.ls.url}/user/login/")
            page.fill("input[name=email]", ADMIN_EMAIL)
            page.fill("input[name=password]", p.ls.home.password())
            page.click("button[type=submit]")
            page.wait_for_load_state("networkidle")
            page.goto(f"{p.ls.url}/projects/{p.project_id}/data?task={task['id']}")
            # the editor re-renders its region list as it settles on the task: wait for the 4 to be drawn
            expect(page.locator(".lsf-tree__node_type_rectangleregion")).to_have_count(4, timeout=120_000)
            image = page.locator("img[src*='/data/local-files/']").first
            assert "clinic" in (image.get_attribute("src") or "")
        finally:
            browser.close()
