"""Wiring of the ``data`` pipeline."""

from kedro.pipeline import Pipeline, node, pipeline

from acne_detection.framework.tracking import to_mlflow_metrics
from acne_detection.pipelines.data.audit import audit_labels
from acne_detection.pipelines.data.grades import attach_grades
from acne_detection.pipelines.data.report import describe_dataset, plot_dataset
from acne_detection.pipelines.data.split import (
    describe_lineage,
    describe_review_lineage,
    find_split_leaks,
    split_dataset,
)
from acne_detection.pipelines.data.tones import describe_skin_tones, measure_skin_tones, plot_skin_tones
from acne_detection.pipelines.data.validation import map_classes, summarise_quarantine, validate_export
from acne_detection.pipelines.data.yolo_plan import plan_yolo_dataset


def create_pipeline(**kwargs) -> Pipeline:
    """ingest (the catalog's ``raw_export``, read once) → map classes → audit labels, validate → grades → skin
    tone → split → YOLO-format dataset → report."""
    return pipeline(
        [
            node(map_classes, ["raw_export", "params:data"], ["mapped_export", "class_mapping"], name="map_classes"),
            node(
                validate_export,
                ["mapped_export", "params:data"],
                ["accepted_images", "accepted_boxes", "quarantine_report", "ingestion_counts"],
                name="validate_export",
            ),
            node(to_mlflow_metrics, "ingestion_counts", "ingestion_counts_mlflow", name="log_ingestion_counts"),
            node(summarise_quarantine, "quarantine_report", "quarantine_summary", name="summarise_quarantine"),
            node(
                audit_labels,
                ["mapped_export", "params:data"],
                ["label_audit", "label_audit_cooccurrence", "label_audit_tags"],
                name="audit_labels",
            ),
            node(
                attach_grades,
                ["accepted_images", "mapped_export", "params:data", "params:grading"],
                ["graded_images", "grade_report"],
                name="attach_grades",
            ),
            node(
                measure_skin_tones,
                ["graded_images", "accepted_boxes", "params:data"],
                "toned_images",
                name="measure_skin_tones",
            ),
            node(
                split_dataset, ["toned_images", "accepted_boxes", "params:data"], "split_images", name="split_dataset"
            ),
            node(find_split_leaks, "split_images", "split_leaks", name="find_split_leaks"),
            node(describe_lineage, "split_images", "split_lineage", name="log_split_lineage"),
            node(
                describe_review_lineage, ["mapped_export", "split_images"], "review_lineage", name="log_review_lineage"
            ),
            node(
                plan_yolo_dataset,
                ["split_images", "accepted_boxes", "params:data"],
                ["yolo_dataset", "ground_truth"],
                name="plan_yolo_dataset",
            ),
            node(
                describe_dataset,
                ["split_images", "ground_truth", "params:train.imgsz"],
                "dataset_report",
                name="describe_dataset",
            ),
            node(
                plot_dataset,
                ["ground_truth", "split_images", "label_audit_cooccurrence", "label_audit", "params:train.imgsz"],
                "dataset_report_plot",
                name="plot_dataset",
            ),
            node(describe_skin_tones, ["split_images", "ground_truth"], "skin_tone_report", name="describe_skin_tones"),
            node(
                plot_skin_tones, ["skin_tone_report", "split_images"], "skin_tone_report_plot", name="plot_skin_tones"
            ),
        ],
        tags=["data"],  # filters the DAG in kedro-viz by stage
    )
