"""The file MLflow logs as the registered model ("models from code"): it names the model and does
nothing else. Loading it runs this file; importing ``acne_detection.model.served`` has no effect."""

import mlflow.models

from acne_detection.model.served import YoloDetector

mlflow.models.set_model(YoloDetector())
