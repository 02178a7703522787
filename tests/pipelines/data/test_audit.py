"""The label audit on the real ACNE04 sample (image-level labels) and on genuine multi-type
exports (lesion labels), and each photo's grade from the export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from kedro.io import DatasetError

from acne_detection.core.params import parse
from acne_detection.datasets import AnnotatedExport
from acne_detection.pipelines.data.audit import audit_labels
from acne_detection.pipelines.data.grades import attach_grades
from acne_detection.pipelines.data.validation import map_classes
from tests.conftest import validated, write_image, write_voc

ACNE04_SINGLE_CLASS = {
    "classes": ["lesion"],
    "class_map": {
        "whitehead and blackhead": "lesion",
        "pustules": "lesion",
        "papules": "lesion",
        "nodules and cysts": "lesion",
    },
}


def _audit(path: Path, params: dict) -> tuple[dict, object, dict]:
    mapped, _ = map_classes(AnnotatedExport(path=str(path)).load(), parse("data", params))
    return audit_labels(mapped, parse("data", params))


def test_acne04_with_the_four_class_map_is_flagged_naming_levleN(acne04_sample, data_params, caplog) -> None:
    audit, cooccurrence, tags = _audit(acne04_sample, data_params)
    assert audit["status"] == "warning" and tags["label_audit"] == "warning"
    assert audit["single_class_share"] == 1.0 and audit["cooccurring_pairs"] == []
    assert set(audit["token_families"]) == {"levleN"}
    assert audit["token_families"]["levleN"] == {
        "levle0": "whitehead and blackhead",
        "levle1": "pustules",
        "levle2": "papules",
        "levle3": "nodules and cysts",
    }
    assert "levleN determines the class" in audit["message"] and "IMAGE-LEVEL" in audit["message"]
    assert any(r.levelname == "WARNING" and "levleN" in r.getMessage() for r in caplog.records)
    matrix = cooccurrence.set_index("class_name")
    assert (matrix.to_numpy() == np.diag(np.diag(matrix.to_numpy()))).all()  # no two names ever share a photo
    with pytest.raises(DatasetError, match="levleN"):
        _audit(acne04_sample, {**data_params, "label_audit": {"strict": True}})


def test_acne04_collapsed_to_one_class_is_reported_as_handled(acne04_sample, caplog) -> None:
    audit, _, tags = _audit(acne04_sample, {**ACNE04_SINGLE_CLASS, "label_audit": {"strict": True}})
    assert audit["status"] == "handled" and "levleN" in audit["message"] and "'lesion'" in audit["message"]
    assert not [r for r in caplog.records if r.levelname == "WARNING" and "Label audit" in r.getMessage()]


def test_the_synthetic_default_is_not_flagged(tmp_path: Path, data_params: dict, caplog) -> None:
    from acne_detection.core.synthetic import write_voc_export

    write_voc_export(tmp_path, n_images=40, size=128, seed=0)
    audit, _, _ = _audit(tmp_path, data_params)
    assert audit["status"] == "ok" and audit["single_class_share"] < 0.5 and not audit["token_families"]
    assert audit["export_format"] == "voc"  # detected (format auto), for the model card
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_a_genuine_multi_type_export_in_type_named_folders_is_not_flagged(tmp_path: Path, data_params: dict) -> None:
    """Several lesion types per photo, photos sorted into folders and named by patient: a
    folder or name token that only *correlates* with a type must not look like a label."""
    rng = np.random.default_rng(0)
    names = ["whitehead and blackhead", "papules", "pustules", "nodules and cysts"]
    for i in range(30):
        folder = tmp_path / ("clinic_a" if i % 2 else "clinic_b")
        image = write_image(folder / f"patient{i % 10}_visit{i}.jpg", size=(64, 64), seed=i)
        picks = rng.choice(names, size=int(rng.integers(2, 6)))
        write_voc(
            image.with_suffix(".xml"),
            image.name,
            [(n, 2 + 10 * k, 2, 10 + 10 * k, 10) for k, n in enumerate(picks)],
            size=(64, 64),
        )
    audit, _, _ = _audit(tmp_path, data_params)
    assert audit["status"] == "ok", audit["message"]
    assert audit["single_class_share"] < 0.5 and len(audit["cooccurring_pairs"]) == 6


def test_one_name_per_photo_decided_by_folder_is_flagged(tmp_path: Path, data_params: dict) -> None:
    for i in range(12):
        cls = ["papules", "pustules"][i % 2]
        image = write_image(tmp_path / cls.upper() / f"img_{i}.jpg", size=(64, 64), seed=i)
        write_voc(image.with_suffix(".xml"), image.name, [(cls, 2, 2, 10, 10), (cls, 20, 20, 30, 30)], size=(64, 64))
    audit, _, _ = _audit(tmp_path, data_params)
    assert audit["status"] == "warning"
    assert audit["determining_tokens"] == {"folder:PAPULES": "papules", "folder:PUSTULES": "pustules"}


def test_grades_from_acne04_names_travel_into_the_split(acne04_sample, tmp_path: Path) -> None:
    from acne_detection.pipelines.data.split import split_dataset

    raw = AnnotatedExport(path=str(acne04_sample)).load()
    images, boxes, _, _ = validated(raw, ACNE04_SINGLE_CLASS)
    graded, report = attach_grades(images, raw, parse("data", ACNE04_SINGLE_CLASS), parse("grading", {}))
    expected = images.image_id.str.extract(r"levle(\d)")[0].astype(int)
    assert graded.grade.astype(int).tolist() == expected.tolist() and report.empty
    split = split_dataset(
        graded, boxes, parse("data", {**ACNE04_SINGLE_CLASS, "split": {"train": 0.55, "val": 0.15, "test": 0.3}})
    )
    assert split.grade.notna().all()
    assert split[split.split == "test"].grade.nunique() >= 3  # stratified by grade: not one grade in test


def test_a_grades_file_wins_and_missing_grades_are_reported_not_guessed(tmp_path: Path, data_params: dict) -> None:
    for seed, name in enumerate(("levle1_a.jpg", "levle2_b.jpg", "c.jpg", "d.jpg")):
        write_image(tmp_path / name, seed=seed)
        write_voc((tmp_path / name).with_suffix(".xml"), name, [("papules", 2, 2, 10, 10)])
    (tmp_path / "grades.csv").write_text("image,grade\nlevle1_a.jpg,3\nc.jpg,0\nd.jpg,7\n")
    raw = AnnotatedExport(path=str(tmp_path)).load()
    images, _, _, _ = validated(raw, data_params)
    graded, report = attach_grades(images, raw, parse("data", data_params), parse("grading", {}))
    grades = graded.set_index("image_id").grade.astype(object).where(graded.grade.notna().to_numpy(), None).to_dict()
    assert grades == {"c.jpg": 0, "d.jpg": None, "levle1_a.jpg": 3, "levle2_b.jpg": 2}
    assert report[["image_id", "reason"]].values.tolist() == [["d.jpg", "unparseable grade"], ["d.jpg", "no grade"]]
