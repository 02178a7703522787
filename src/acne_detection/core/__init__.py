"""The domain: what a photo, a lesion, a grade and a detector's score are, and how they are measured.

Nothing here imports Kedro or MLflow: metrics, grading, calibration, prediction (inference),
skin tone, image checks, the settings' types (params), demo data (synthetic), the model card.
"""
