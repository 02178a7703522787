"""Detector training shared by the ``train`` stage and the ``sweep``: fine-tuning YOLOv8
(``detector``), the project's Ultralytics trainers without their integrations (``trainers``),
and resuming an interrupted run (``resume``).

The pipelines call in here; nothing here imports a pipeline. MLflow is reached only through
``acne_detection.framework`` (the live per-epoch metrics and the run id training records).
"""
