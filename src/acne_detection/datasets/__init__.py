"""The project's custom Kedro datasets: export folders, the YOLO folder, weight files."""

from acne_detection.datasets.export import AnnotatedExport, RawExport
from acne_detection.datasets.label_studio import LabelStudioProject
from acne_detection.datasets.mlflow_inputs import MlflowInputs
from acne_detection.datasets.mlflow_tags import MlflowTags
from acne_detection.datasets.model_record import ModelRecordDataset, ModelRecords
from acne_detection.datasets.photo_folder import FileFolder, OptionalJSONDataset, PhotoFolder, Photos
from acne_detection.datasets.registered_model import RegisteredDetector
from acne_detection.datasets.typed_table import TypedTable
from acne_detection.datasets.weights import PretrainedWeights, PretrainedWeightsSource, WeightsFile, Workdir
from acne_detection.datasets.yolo_folder import YoloDataset, YoloDatasetFolder

__all__ = [
    "AnnotatedExport",
    "FileFolder",
    "LabelStudioProject",
    "MlflowInputs",
    "MlflowTags",
    "ModelRecordDataset",
    "ModelRecords",
    "OptionalJSONDataset",
    "PhotoFolder",
    "Photos",
    "PretrainedWeights",
    "PretrainedWeightsSource",
    "RawExport",
    "RegisteredDetector",
    "TypedTable",
    "WeightsFile",
    "Workdir",
    "YoloDataset",
    "YoloDatasetFolder",
]
