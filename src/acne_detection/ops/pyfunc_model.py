"""The file MLflow logs as the registered model ("models from code"): it names the model and does
nothing else. Loading it runs this file; importing ``acne_detection.ops.serving`` has no effect."""

import mlflow.models

from acne_detection.ops.serving import YoloDetector

mlflow.models.set_model(YoloDetector())
