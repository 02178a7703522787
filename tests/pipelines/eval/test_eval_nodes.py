"""Evaluation nodes on a real tiny dataset with crafted predictions (no model needed)."""

from __future__ import annotations

import pandas as pd
import pytest
from kedro.io import DatasetError

from acne_detection.core.params import parse
from acne_detection.pipelines.eval.nodes import (
    check_quality_gate,
    choose_operating_point,
    evaluate_detections,
    fingerprint_inputs,
    sweep_thresholds,
    sweep_validation_thresholds,
)
from acne_detection.pipelines.eval.plots import (
    plot_confusion_matrix,
    plot_error_gallery,
    plot_grade_confusion,
    plot_threshold_curves,
)
from acne_detection.pipelines.eval.report import report_headline


@pytest.fixture
def crafted(tiny_yolo):
    """Predictions: every test lesion found at confidence 0.9, plus false alarms at 0.3."""
    dataset, ground_truth = tiny_yolo
    gt = ground_truth[ground_truth.split == "test"]
    hits = gt.assign(confidence=0.9)[["image", "class_id", "confidence", "x_min", "y_min", "x_max", "y_max"]]
    alarms = hits.head(3).assign(confidence=0.3, x_min=0.0, y_min=0.0, x_max=3.0, y_max=3.0)
    preds = pd.concat([hits, alarms], ignore_index=True)
    preds.insert(2, "class", preds.class_id.map(dict(enumerate(dataset.names))))
    return dataset, ground_truth, preds


def _predictions(dataset, ground_truth, hit: float, alarm: float, split: str = "val") -> pd.DataFrame:
    """Every lesion of a split found at ``hit``, plus three false alarms at ``alarm``."""
    gt = ground_truth[ground_truth.split == split]
    hits = gt.assign(confidence=hit)[["image", "class_id", "confidence", "x_min", "y_min", "x_max", "y_max"]]
    alarms = hits.head(3).assign(confidence=alarm, x_min=0.0, y_min=0.0, x_max=3.0, y_max=3.0)
    preds = pd.concat([hits, alarms], ignore_index=True)
    preds.insert(2, "class", preds.class_id.map(dict(enumerate(dataset.names))))
    return preds


def test_the_operating_point_is_chosen_on_validation_and_test_is_only_reported_there(crafted) -> None:
    """Validation's lesions score 0.6 and its false alarms 0.5; the test split's 0.9 and 0.7. The
    threshold comes from validation (in (0.5, 0.6]), and the figures reported at it are the test
    split's, false alarms and all; chosen on test it would have been above 0.7."""
    dataset, ground_truth, _ = crafted
    params = parse("eval", {})
    test_sweep = sweep_thresholds(_predictions(dataset, ground_truth, 0.9, 0.7, "test"), ground_truth, dataset, params)
    val_sweep = sweep_validation_thresholds(
        _predictions(dataset, ground_truth, 0.6, 0.5), ground_truth, dataset, params
    )
    point = choose_operating_point(val_sweep, params, test_sweep=test_sweep)
    assert 0.5 < point["threshold"] <= 0.6 and point["chosen_on"] == "validation"
    assert point["val_f1"] == 1.0 and point["val_recall"] == 1.0
    # the test split's figures at that threshold: every test lesion kept, and its three false alarms too
    n = int((ground_truth.split == "test").sum())
    assert point["recall"] == 1.0 and point["precision"] == pytest.approx(n / (n + 3))
    on_test = choose_operating_point(test_sweep, params, test_sweep=test_sweep)["threshold"]
    assert 0.7 < on_test <= 0.9  # what choosing on test would have picked: not what was picked
    # no validation lesion: nothing to choose by, the lowest threshold, said so
    empty = val_sweep.assign(tp=0, fn=0, fp=0, precision=float("nan"), recall=float("nan"), f1=float("nan"))
    fallback = choose_operating_point(empty, params, test_sweep=test_sweep)
    assert fallback["chosen_on"] == "none" and fallback["threshold"] == 0.05 and fallback["recall"] == 1.0
    nothing = choose_operating_point(val_sweep.head(0), params, test_sweep=test_sweep)  # no validation photo at all
    assert nothing["chosen_on"] == "none" and nothing["threshold"] == 0.05


def test_sweep_operating_point_and_metrics(crafted) -> None:
    dataset, ground_truth, preds = crafted
    params = {}
    sweep = sweep_thresholds(preds, ground_truth, dataset, parse("eval", params))
    overall = sweep[sweep["class"] == "all"].set_index("threshold")
    assert overall.loc[0.25, "recall"] == 1.0 and overall.loc[0.25, "fp"] == 3
    assert overall.loc[0.35, "precision"] == 1.0 and overall.loc[0.95, "recall"] == 0.0
    # validation sees the test split's picture (lesions at 0.9, false alarms at 0.3): same choice
    val_sweep = sweep_validation_thresholds(
        _predictions(dataset, ground_truth, 0.9, 0.3), ground_truth, dataset, parse("eval", params)
    )
    point = choose_operating_point(val_sweep, parse("eval", params), test_sweep=sweep)
    assert 0.3 < point["threshold"] <= 0.9 and point["f1"] == 1.0 and point["chosen_on"] == "validation"
    strict_recall = choose_operating_point(
        val_sweep,
        parse("eval", {"operating_point": {"rule": "recall_target", "recall_target": 0.85}}),
        test_sweep=sweep,
    )
    assert strict_recall["threshold"] == 0.9 and strict_recall["recall"] == 1.0
    per_class, confusion, headline = evaluate_detections(preds, ground_truth, dataset, point, parse("eval", params))
    assert headline["mAP50"] == pytest.approx(1.0) and headline["recall"] == 1.0 and headline["precision"] == 1.0
    assert confusion.set_index("true").loc["background"].sum() == 0  # no false alarm above the threshold
    overall = per_class.set_index("class").loc["all"]
    test_lesions = int((ground_truth.split == "test").sum())
    assert overall.instances == overall.tp == test_lesions and overall.fp == overall.fn == 0
    assert headline[f"recall.{dataset.names[0]}"] == 1.0 and headline["operating_threshold"] == point["threshold"]
    gate = check_quality_gate(headline, {}, {}, parse("eval", params))
    assert gate["gate"] == "pass" and "gate.grade_accuracy" not in gate  # not gated unless asked
    grading = {
        "photos_graded": 6.0,
        "grade_accuracy": 4 / 6,
        "grade_accuracy_low": 0.3,
        "grade_accuracy_high": 0.903,
        "grade_ceiling": 5 / 6,
        "grade_recall.mild": 0.5,
        "count_mae": 30 / 7,
        "count_rmse": 6.414,
    }
    from acne_detection.pipelines.eval.tones import COLUMNS

    text = report_headline(
        per_class,
        point,
        gate,
        grading,
        pd.DataFrame(columns=COLUMNS),
        {"skin_tone.check": "not measured: no test photo has a skin tone"},
    )
    assert "Quality gate: **PASS**" in text and "pycocotools" in text
    assert "Grade accuracy on 6 test photos: **0.667** (95 % Wilson interval: 0.300-0.903); ceiling 0.833" in text
    assert "MAE 4.29, RMSE 6.41" in text and "mild 0.50" in text
    assert len(plot_threshold_curves(sweep, point).axes) == 4
    assert plot_error_gallery(preds, ground_truth, dataset, point, parse("eval", {"gallery_size": 2})).axes


def test_both_confusion_figures_write_the_counts_and_the_recall_per_true_label() -> None:
    boxes = pd.DataFrame({"true": ["papule", "background"], "papule": [3, 1], "background": [1, 0]})
    counts, recall = plot_confusion_matrix(boxes).axes
    assert [t.get_text() for t in counts.texts] == ["3", "1", "1", "0"]
    assert [t.get_text() for t in recall.texts] == ["0.75", "0.25", "1.00", "0.00"]
    assert (recall.get_xlabel(), recall.get_ylabel()) == ("predicted class", "true class")
    photos = pd.DataFrame({"true": ["mild", "severe"], "mild": [2, 0], "severe": [2, 1]})
    metrics = {
        "photos_graded": 5.0,
        "grade_accuracy": 0.6,
        "grade_accuracy_low": 0.2,
        "grade_accuracy_high": 0.9,
        "grade_ceiling": 0.8,
    }
    figure = plot_grade_confusion(photos, metrics)
    assert [t.get_text() for t in figure.axes[1].texts] == ["0.50", "0.50", "0.00", "1.00"]
    assert figure.axes[0].get_xlabel() == "predicted grade" and "accuracy 0.600" in figure.get_suptitle()
    assert plot_grade_confusion(photos, {}).get_suptitle() == ""  # no true grade: no accuracy to state


def test_gate_fails_loudly_only_when_strict() -> None:
    weak = {"mAP50": 0.7, "recall": 0.9, "precision": 0.8}
    verdict = check_quality_gate(weak, {}, {}, parse("eval", {}))
    assert verdict["gate"] == "fail" and verdict["gate.mAP50"].startswith("fail (0.700 < 0.80)")
    assert verdict["gate.recall"].startswith("pass")
    with pytest.raises(DatasetError, match="Quality gate failed"):
        check_quality_gate(weak, {}, {}, parse("eval", {"gate": {"strict": True}}))
    good = {"mAP50": 0.9, "recall": 0.9, "precision": 0.8}
    graded = check_quality_gate(good, {"grade_accuracy": 0.7}, {}, parse("eval", {"gate": {"grade_accuracy": 0.8}}))
    assert graded["gate"] == "fail" and graded["gate.grade_accuracy"] == "fail (0.700 < 0.80)"
    unmeasured = check_quality_gate(good, {}, {}, parse("eval", {"gate": {"grade_accuracy": 0.8}}))
    assert unmeasured["gate.grade_accuracy"].startswith("fail (not measured")
    assert "gate.skin_tone" not in unmeasured  # not gated unless asked
    toned = check_quality_gate(
        good,
        {},
        {"skin_tone.check": "warning: dark recall 0.700 is 0.200 below the overall 0.900"},
        parse("eval", {"gate": {"skin_tone": True}}),
    )
    assert toned["gate"] == "fail" and toned["gate.skin_tone"].startswith("fail (warning: dark recall 0.700")
    assert (
        check_quality_gate(
            good, {}, {"skin_tone.check": "pass (no band ...)"}, parse("eval", {"gate": {"skin_tone": True}})
        )["gate"]
        == "pass"
    )


def test_lineage_tags_hash_the_manifest(tiny_yolo) -> None:
    dataset, _ = tiny_yolo
    tags = fingerprint_inputs(dataset, {"mlflow_run_id": "abc"}, parse("eval", {}))
    assert tags["model_run_id"] == "abc" and len(tags["dataset_manifest_sha256"]) == 64
    shuffled = type(dataset)(
        dataset.root, dataset.data_yaml, dataset.names, dataset.manifest.sample(frac=1, random_state=0)
    )
    assert (
        fingerprint_inputs(shuffled, {}, parse("eval", {}))["dataset_manifest_sha256"]
        == tags["dataset_manifest_sha256"]
    )
    other = fingerprint_inputs(dataset, {"mlflow_run_id": "abc"}, parse("eval", {"model": "runs:/f00d/"}))
    assert (other["model_source"], other["model_run_id"]) == ("runs:/f00d/", "f00d")


def test_metrics_through_the_eval_nodes_equal_pycocotools(tiny_yolo) -> None:
    """A known, imperfect table (misses, shifted boxes, wrong classes, tied scores) through the
    real node, against pycocotools' own COCOeval built here, independently of the node's code."""
    import contextlib
    import io

    import numpy as np
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    dataset, ground_truth = tiny_yolo
    gt = ground_truth[ground_truth.split == "test"].reset_index(drop=True)
    rng = np.random.default_rng(0)
    preds = gt.sample(frac=0.8, random_state=0)[["image", "class_id", "x_min", "y_min", "x_max", "y_max"]].copy()
    preds["confidence"] = rng.choice([0.3, 0.5, 0.9], len(preds))
    shift = rng.choice([0.0, 0.0, 3.0], len(preds))
    preds[["x_min", "x_max"]] = preds[["x_min", "x_max"]].add(shift, axis=0)
    preds.loc[preds.index[:2], "class_id"] = (preds.class_id[:2] + 1) % len(dataset.names)
    preds.insert(2, "class", preds.class_id.map(dict(enumerate(dataset.names))))
    per_class, _, headline = evaluate_detections(preds, ground_truth, dataset, {"threshold": 0.25}, parse("eval", {}))

    images = {name: i for i, name in enumerate(sorted(set(gt.image) | set(preds.image)), 1)}
    xywh = lambda r: [r.x_min, r.y_min, r.x_max - r.x_min, r.y_max - r.y_min]  # noqa: E731
    coco = COCO()
    coco.dataset = {
        "images": [{"id": i} for i in images.values()],
        "categories": [{"id": c} for c in range(len(dataset.names))],
        "annotations": [
            {
                "id": k,
                "image_id": images[r.image],
                "category_id": int(r.class_id),
                "iscrowd": 0,
                "bbox": xywh(r),
                "area": xywh(r)[2] * xywh(r)[3],
            }
            for k, r in enumerate(gt.itertuples(), 1)
        ],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        dets = coco.loadRes(
            [
                {"image_id": images[r.image], "category_id": int(r.class_id), "score": r.confidence, "bbox": xywh(r)}
                for r in preds.itertuples()
            ]
        )
        ev = COCOeval(coco, dets, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert 0.2 < headline["mAP50"] < 1.0  # imperfect, so a wrong rule would show
    assert headline["mAP50-95"] == pytest.approx(ev.stats[0], abs=1e-9)
    assert headline["mAP50"] == pytest.approx(ev.stats[1], abs=1e-9)
    assert headline["mAP75"] == pytest.approx(ev.stats[2], abs=1e-9)
    for key, stat in (("mAP_small", 3), ("mAP_medium", 4), ("mAP_large", 5)):
        if ev.stats[stat] >= 0:
            assert headline[key] == pytest.approx(ev.stats[stat], abs=1e-9), key


def test_a_model_with_other_classes_is_refused_naming_both_lists(tiny_yolo) -> None:
    from acne_detection.pipelines.eval.nodes import check_model_classes

    dataset, _ = tiny_yolo
    check_model_classes(dict(enumerate(dataset.names)), dataset.names, model_label="ok.pt")
    with pytest.raises(
        DatasetError, match=r"coco\.pt.*\['person', 'bicycle'\].*\['comedone', 'papule', 'pustule', 'nodule'\]"
    ):
        check_model_classes({0: "person", 1: "bicycle"}, dataset.names, model_label="coco.pt")
    swapped = dict(enumerate(["papule", "comedone", "pustule", "nodule"]))
    with pytest.raises(DatasetError, match="order must match"):
        check_model_classes(swapped, dataset.names, model_label="swapped.pt")


def test_predicting_with_the_coco_model_stops_before_predicting(tiny_yolo, tmp_path) -> None:
    import yaml

    from acne_detection.datasets import PretrainedWeightsSource
    from acne_detection.pipelines.eval.nodes import predict_test_split
    from tests.conftest import PROJECT_ROOT

    base = yaml.safe_load((PROJECT_ROOT / "conf" / "base" / "catalog.yml").read_text())["pretrained_weights"]
    source = PretrainedWeightsSource(
        **{
            **{k: v for k, v in base.items() if k != "type"},
            "cache": str(tmp_path / "yolov8n.pt"),
            "try_download": False,
        }
    )
    weights, _ = source.load().resolve()
    with pytest.raises(DatasetError, match=r"'person'.*'comedone'"):
        predict_test_split(weights, tiny_yolo[0], {"nms_iou": 0.7}, parse("eval", {}))


def test_grading_through_the_real_nodes_on_crafted_predictions(crafted) -> None:
    """Every test lesion found, plus 3 false alarms: counts are off by exactly those alarms."""
    from acne_detection.core.grade_model import GradeModel
    from acne_detection.core.grading import GradingRule, severity_grade
    from acne_detection.pipelines.eval.grading import evaluate_grading, grade_test_photos

    dataset, ground_truth, preds = crafted
    test = dataset.manifest[dataset.manifest.split == "test"]
    split_images = test[["image_id"]].assign(grade=["1"] + [""] * (len(test) - 1))  # one photo with a true grade
    photos = grade_test_photos(
        preds, ground_truth, dataset, split_images, {"threshold": 0.25}, {}, {}, pd.DataFrame(), parse("grading", {})
    )
    assert len(photos) == len(test)
    truth = ground_truth[ground_truth.split == "test"].groupby("image").size()
    assert photos.true_count.tolist() == photos.image.map(truth).fillna(0).astype(int).tolist()
    alarms = preds[preds.confidence == 0.3].groupby("image").size()
    assert (photos.pred_count - photos.true_count).tolist() == photos.image.map(alarms).fillna(0).astype(int).tolist()
    assert photos.true_grade.notna().sum() == 1
    only_found = grade_test_photos(
        preds, ground_truth, dataset, split_images, {"threshold": 0.5}, {}, {}, pd.DataFrame(), parse("grading", {})
    )
    assert (only_found.pred_count == only_found.true_count).all()
    metrics, confusion = evaluate_grading(only_found, parse("grading", {}))
    first = only_found.iloc[0]
    assert metrics["grade_accuracy"] == float(first.pred_grade == 1) and metrics["count_mae"] == 0.0
    assert confusion.set_index("true").to_numpy().sum() == 1
    assert len(plot_grade_confusion(confusion, metrics).axes) == 2
    with pytest.raises(DatasetError, match="count_classes"):
        grade_test_photos(
            preds,
            ground_truth,
            dataset,
            split_images,
            {"threshold": 0.5},
            {},
            {},
            pd.DataFrame(),
            parse("grading", {"count_classes": ["scar"]}),
        )
    hayashi = grade_test_photos(
        preds,
        ground_truth,
        dataset,
        split_images,
        {"threshold": 0.5},
        {},
        {},
        pd.DataFrame(),
        parse("grading", {"count_classes": ["papule", "pustule"]}),
    )
    inflammatory = ground_truth[(ground_truth.split == "test") & ground_truth["class"].isin(["papule", "pustule"])]
    assert hayashi.true_count.sum() == len(inflammatory)
    # the grade model's count correction grades the detector's count (rule_grade); the grade shown is
    # the most probable under the model's probabilities (pred_grade)
    corrected = GradeModel.rule(GradingRule(thresholds=(0, 1, 2)))
    lowered = grade_test_photos(
        preds,
        ground_truth,
        dataset,
        split_images,
        {"threshold": 0.5},
        {},
        corrected.to_dict(),
        pd.DataFrame(),
        parse("grading", {}),
    )
    assert lowered.rule_grade.tolist() == severity_grade(lowered.pred_count, [0, 1, 2]).tolist()
    shown = corrected.probabilities(preds, lowered.image).argmax(axis=1)
    assert lowered.pred_grade.tolist() == shown.tolist()
    assert (lowered.pred_grade != severity_grade(lowered.pred_count)).any()  # the correction changed some grade


def test_the_summary_opens_in_words_and_says_when_the_rule_and_the_grades_disagree(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A clinician's sentence first; ACNE04's anchor only for ACNE04's photos; a ceiling under 0.5
    names the rule and says it disagrees with the data's grades, in the summary and the log."""
    import logging

    from acne_detection.pipelines.eval.tones import COLUMNS

    per_class = pd.DataFrame(
        [{"class": "all", "instances": 9, "ap50": 0.5, "ap50_95": 0.2, "precision": 0.8, "recall": 0.6, "f1": 0.69}]
    )
    grading = {
        "photos_graded": 40.0,
        "grade_accuracy": 0.3,
        "grade_accuracy_low": 0.18,
        "grade_accuracy_high": 0.45,
        "grade_sources": 14.0,  # 40 photos that are copies of 14 source photos: the interval is over sources
        "grade_ceiling": 0.4,
        "grade_within_one": 0.7,
    }
    acne04 = pd.DataFrame({"image_id": ["test/levle1_3_jpg.rf.ab.jpg"], "file": ["/nowhere/levle1_3.jpg"]})
    point, tones = {"threshold": 0.2, "rule": "max_f1"}, pd.DataFrame(columns=COLUMNS)
    with caplog.at_level(logging.WARNING):
        text = report_headline(
            per_class, point, {"gate": "fail"}, grading, tones, {"skin_tone.check": "n/a"}, None, acne04
        )
    opening = text.split("## Test-split results")[0]
    assert (
        "On 40 real test photos it never trained on, this model gave 30 % of them their true severity grade" in opening
    )
    assert "(95 % interval over 14 source photos: 18 %-45 %)" in opening and "It found 60 % of the lesions" in opening
    assert "The grading rule and the data's grades disagree" in opening and "0-5 mild, 6-20 moderate" in opening
    assert "disagree" in caplog.text and "Published anchor on ACNE04" in text
    other = pd.DataFrame({"image_id": ["a/photo_1.jpg"], "file": ["/nowhere/photo_1.jpg"]})
    plain = report_headline(
        per_class,
        point,
        {"gate": "fail"},
        {**grading, "grade_ceiling": 0.9},
        tones,
        {"skin_tone.check": "n/a"},
        None,
        other,
    )
    assert "ACNE04" not in plain and "disagree" not in plain


def _box(image: str, conf: float, x: float, y: float, side: float = 10.0) -> dict:
    return {"image": image, "class_id": 0, "class": "lesion", "confidence": conf,
            "x_min": x, "y_min": y, "x_max": x + side, "y_max": y + side}  # fmt: skip


def test_the_nms_iou_that_drops_near_copies_of_small_lesions_is_chosen_on_validation() -> None:
    """Two 10 px lesions; at the loose IoU each also has a copy 2 px off (IoU 0.67 with it, so
    NMS at 0.7 keeps it), the first copy ranked above the second lesion: a false positive ahead
    of a true one. Without the copies AP@50 is 1; with them it is lower, and the stricter IoU wins."""
    from acne_detection.pipelines.eval.nodes import choose_nms_iou, nms_chosen_how

    truth = pd.DataFrame([_box("a.jpg", 1.0, 10, 10), _box("a.jpg", 1.0, 60, 60)]).drop(columns="confidence")
    clean = pd.DataFrame([_box("a.jpg", 0.9, 10, 10), _box("a.jpg", 0.5, 60, 60)])
    copies = pd.DataFrame([_box("a.jpg", 0.8, 12, 10), _box("a.jpg", 0.4, 62, 60)])
    tables = {0.7: pd.concat([clean, copies], ignore_index=True), 0.5: clean}
    choice = choose_nms_iou(tables, truth, ["a.jpg", "b.jpg"], n_classes=1)
    assert choice["nms_iou"] == 0.5 and choice["chosen_on"] == "validation"
    by_iou = {row["nms_iou"]: row for row in choice["candidates"]}
    assert by_iou[0.5]["val_mAP50"] == pytest.approx(1.0)
    assert by_iou[0.7]["val_mAP50"] < 0.95  # precision 1/2 at the second lesion's recall
    assert by_iou[0.7]["boxes_per_photo"] == 2.0 and by_iou[0.5]["boxes_per_photo"] == 1.0  # 4 and 2 boxes, 2 photos
    assert "highest validation mAP@50 of 0.70 (" in nms_chosen_how(choice)


def test_the_nms_iou_keeps_eval_nms_iou_on_ties_and_without_validation_lesions() -> None:
    from acne_detection.pipelines.eval.nodes import choose_nms_iou

    truth = pd.DataFrame([_box("a.jpg", 1.0, 10, 10)]).drop(columns="confidence")
    same = pd.DataFrame([_box("a.jpg", 0.9, 10, 10)])
    tie = choose_nms_iou({0.7: same, 0.5: same, 0.4: same}, truth, ["a.jpg"], n_classes=1)
    assert tie["nms_iou"] == 0.7 and tie["chosen_on"] == "validation"  # nothing beats the first: it stays
    none = choose_nms_iou({0.7: same, 0.5: same.head(0)}, truth.head(0), ["a.jpg"], n_classes=1)
    assert none["nms_iou"] == 0.7 and none["chosen_on"] == "none"
    fixed = choose_nms_iou({0.6: same}, truth, ["a.jpg"], n_classes=1)
    assert fixed["nms_iou"] == 0.6 and fixed["chosen_on"] == "fixed"


def test_eval_tries_nms_iou_first_then_each_candidate_once() -> None:
    assert parse("eval", {"nms_iou": 0.6, "nms_candidates": [0.5, 0.6, 0.4]}).nms_tried == (0.6, 0.5, 0.4)
    assert parse("eval", {"nms_candidates": []}).nms_tried == (0.7,)
    with pytest.raises(ValueError, match="nms_candidates"):
        parse("eval", {"nms_candidates": [0.5, 1.2]})
