"""Wiring of the ``eval`` pipeline."""

from kedro.pipeline import Pipeline, node, pipeline

from acne_detection.framework.tracking import to_mlflow_metrics
from acne_detection.pipelines.eval.calibration import (
    calibrate_predictions,
    estimate_grade_probabilities,
    fit_calibration,
    measure_calibration,
    plot_reliability,
)
from acne_detection.pipelines.eval.card import write_model_card
from acne_detection.pipelines.eval.grading import (
    evaluate_grading,
    fit_grade_model,
    fit_grading_correction,
    grade_test_photos,
    score_photos,
)
from acne_detection.pipelines.eval.nodes import (
    check_quality_gate,
    choose_operating_point,
    evaluate_detections,
    fingerprint_inputs,
    nms_metrics,
    predict_test_split,
    predict_train_split,
    predict_val_split,
    record_model,
    sweep_thresholds,
    sweep_validation_thresholds,
)
from acne_detection.pipelines.eval.plots import (
    plot_confusion_matrix,
    plot_error_gallery,
    plot_grade_confusion,
    plot_skin_tone_metrics,
    plot_threshold_curves,
)
from acne_detection.pipelines.eval.report import report_headline
from acne_detection.pipelines.eval.tones import evaluate_by_skin_tone


def create_pipeline(**kwargs) -> Pipeline:
    """Trained weights + test split → predictions → thresholds → metrics, grading, plots, gate, headline."""
    return pipeline(
        [
            node(
                predict_test_split,
                ["trained_weights", "yolo_dataset", "nms_choice", "params:eval"],
                "test_predictions",
                name="predict_test_split",
            ),
            node(
                predict_val_split,
                ["trained_weights", "yolo_dataset", "ground_truth", "params:eval"],
                ["val_predictions", "nms_choice"],
                name="predict_val_split",
            ),
            node(nms_metrics, "nms_choice", "nms_metrics", name="measure_nms_choice"),
            node(to_mlflow_metrics, "nms_metrics", "nms_metrics_mlflow", name="log_nms_metrics"),
            node(
                predict_train_split,
                ["trained_weights", "yolo_dataset", "nms_choice", "params:eval"],
                "train_predictions",
                name="predict_train_split",
            ),
            node(
                score_photos,
                ["grade_classifier", "yolo_dataset", "params:grading"],
                "grade_classifier_scores",
                name="score_photos",
            ),
            node(
                fit_grade_model,
                [
                    "calibrated_val_predictions",
                    "train_predictions",
                    "grade_classifier_scores",
                    "grade_classifier",
                    "yolo_dataset",
                    "split_images",
                    "calibration",
                    "operating_point",
                    "grading_correction",
                    "params:grading",
                ],
                ["grade_model", "grade_model_candidates"],
                name="fit_grade_model",
            ),
            node(
                fit_calibration,
                ["val_predictions", "ground_truth", "params:eval"],
                "calibration",
                name="fit_calibration",
            ),
            node(
                calibrate_predictions,
                ["test_predictions", "calibration"],
                "calibrated_test_predictions",
                name="calibrate_test_predictions",
            ),
            node(
                measure_calibration,
                ["test_predictions", "ground_truth", "yolo_dataset", "split_images", "calibration", "params:eval"],
                ["calibration_metrics", "reliability_table"],
                name="measure_calibration",
            ),
            node(
                to_mlflow_metrics, "calibration_metrics", "calibration_metrics_mlflow", name="log_calibration_metrics"
            ),
            node(
                plot_reliability,
                ["reliability_table", "calibration_metrics"],
                "reliability_diagram",
                name="plot_reliability",
            ),
            node(
                estimate_grade_probabilities,
                [
                    "calibrated_test_predictions",
                    "test_grades",
                    "calibration",
                    "grade_model",
                    "grade_classifier_scores",
                    "yolo_dataset",
                    "split_images",
                    "params:grading",
                ],
                ["test_grade_probabilities", "grade_probability_metrics"],
                name="estimate_grade_probabilities",
            ),
            node(
                to_mlflow_metrics,
                "grade_probability_metrics",
                "grade_probability_metrics_mlflow",
                name="log_grade_probability_metrics",
            ),
            node(
                fingerprint_inputs,
                ["yolo_dataset", "training_summary", "params:eval"],
                "eval_lineage_tags",
                name="fingerprint_inputs",
            ),
            node(
                sweep_thresholds,
                ["calibrated_test_predictions", "ground_truth", "yolo_dataset", "params:eval"],
                "threshold_sweep",
                name="sweep_thresholds",
            ),
            node(
                calibrate_predictions,
                ["val_predictions", "calibration"],
                "calibrated_val_predictions",
                name="calibrate_val_predictions",
            ),
            node(
                sweep_validation_thresholds,
                ["calibrated_val_predictions", "ground_truth", "yolo_dataset", "params:eval"],
                "val_threshold_sweep",
                name="sweep_validation_thresholds",
            ),
            node(
                choose_operating_point,
                {"val_sweep": "val_threshold_sweep", "params": "params:eval", "test_sweep": "threshold_sweep"},
                "operating_point",
                name="choose_operating_point",
            ),
            node(
                record_model,
                [
                    "operating_point",
                    "nms_choice",
                    "calibration",
                    "grade_model",
                    "trained_weights",
                    "split_images",
                    "params:eval",
                ],
                "model_record",
                name="record_model",
            ),
            node(
                evaluate_detections,
                ["calibrated_test_predictions", "ground_truth", "yolo_dataset", "operating_point", "params:eval"],
                ["test_metrics_per_class", "confusion_matrix", "test_metrics"],
                name="evaluate_detections",
            ),
            node(
                fit_grading_correction,
                [
                    "calibrated_val_predictions",
                    "ground_truth",
                    "yolo_dataset",
                    "split_images",
                    "operating_point",
                    "params:grading",
                ],
                "grading_correction",
                name="fit_grading_correction",
            ),
            node(
                grade_test_photos,
                [
                    "calibrated_test_predictions",
                    "ground_truth",
                    "yolo_dataset",
                    "split_images",
                    "operating_point",
                    "calibration",
                    "grade_model",
                    "grade_classifier_scores",
                    "params:grading",
                ],
                "test_grades",
                name="grade_test_photos",
            ),
            node(
                evaluate_grading,
                ["test_grades", "params:grading"],
                ["grading_metrics", "grade_confusion_matrix"],
                name="evaluate_grading",
            ),
            node(
                plot_grade_confusion,
                ["grade_confusion_matrix", "grading_metrics"],
                "grade_confusion_plot",
                name="plot_grade_confusion",
            ),
            node(to_mlflow_metrics, "grading_metrics", "grading_metrics_mlflow", name="log_grading_metrics"),
            node(
                evaluate_by_skin_tone,
                [
                    "calibrated_test_predictions",
                    "ground_truth",
                    "yolo_dataset",
                    "split_images",
                    "operating_point",
                    "test_grades",
                    "params:eval",
                ],
                ["skin_tone_metrics", "skin_tone_metrics_mlflow", "skin_tone_check"],
                name="evaluate_by_skin_tone",
            ),
            node(
                plot_skin_tone_metrics,
                ["skin_tone_metrics", "params:eval"],
                "skin_tone_plot",
                name="plot_skin_tone_metrics",
            ),
            node(
                check_quality_gate,
                ["test_metrics", "grading_metrics", "skin_tone_check", "params:eval"],
                "quality_gate",
                name="check_quality_gate",
            ),
            node(
                write_model_card,
                [
                    "split_images",
                    "ground_truth",
                    "yolo_dataset",
                    "ingestion_counts",
                    "label_audit",
                    "test_metrics",
                    "grading_metrics",
                    "skin_tone_metrics",
                    "quality_gate",
                    "skin_tone_check",
                    "model_record",
                    "training_summary",
                    "training_health",
                    "params:train",
                    "params:grading",
                    "calibration_metrics",
                    "grade_probability_metrics",
                    "grading_correction",
                ],
                "model_card",
                name="write_model_card",
            ),
            node(plot_confusion_matrix, "confusion_matrix", "confusion_matrix_plot", name="plot_confusion_matrix"),
            node(
                plot_threshold_curves,
                ["threshold_sweep", "operating_point"],
                "threshold_curves",
                name="plot_threshold_curves",
            ),
            node(
                plot_error_gallery,
                ["calibrated_test_predictions", "ground_truth", "yolo_dataset", "operating_point", "params:eval"],
                "error_gallery",
                name="plot_error_gallery",
            ),
            node(to_mlflow_metrics, "test_metrics", "test_metrics_mlflow", name="log_test_metrics"),
            node(
                report_headline,
                [
                    "test_metrics_per_class",
                    "operating_point",
                    "quality_gate",
                    "grading_metrics",
                    "skin_tone_metrics",
                    "skin_tone_check",
                    "grade_confusion_matrix",
                    "split_images",
                    "params:grading",
                ],
                "results_summary",
                name="report_headline",
            ),
        ],
        tags=["eval"],  # filters the DAG in kedro-viz by stage
    )
