"""Wiring of the ``data`` pipeline."""

from kedro.pipeline import Pipeline, node, pipeline

from acne_detection.pipelines.data.nodes import plan_yolo_dataset, split_dataset, summarise_quarantine, validate_export
from acne_detection.tracking import to_mlflow_metrics


def create_pipeline(**kwargs) -> Pipeline:
    """ingest (the catalog's ``raw_export``) → validate → split → YOLO-format dataset."""
    return pipeline(
        [
            node(validate_export, ["raw_export", "params:data"],
                 ["accepted_images", "accepted_boxes", "quarantine_report", "ingestion_counts"], name="validate_export"),
            node(to_mlflow_metrics, "ingestion_counts", "ingestion_counts_mlflow", name="log_ingestion_counts"),
            node(summarise_quarantine, "quarantine_report", "quarantine_summary", name="summarise_quarantine"),
            node(split_dataset, ["accepted_images", "accepted_boxes", "params:data"], "split_images", name="split_dataset"),
            node(plan_yolo_dataset, ["split_images", "accepted_boxes", "params:data"],
                 ["yolo_dataset", "ground_truth"], name="plan_yolo_dataset"),
        ]
    )
