"""MONAI / ignite glue used by the bundle configs: batches, transforms, post-processing, metrics, handlers.

The bundles only wire these together; every ``$`` expression in their configs is at most one call into here.
"""

from coseg.engines.bundle import (
    check_dataset_classes,
    dataset_classes,
    find_bundle_root,
    histo_datalist,
    image_datalist,
    trainable_parameters,
)
from coseg.engines.dental import (
    CheckVolumed,
    DentalEvaluationReport,
    DentalInferenceWriter,
    VolumeSliceInferer,
    cbct_cases,
    cbct_datalist,
    volume_datalist,
)
from coseg.engines.handlers import (
    LossTermsHandler,
    OverlayWriter,
    ProgressBar,
    TrainingCheckpointLoader,
    TrainingCheckpointSaver,
    finish_distributed,
    loss_value,
    rank_zero_handlers,
)
from coseg.engines.history import ValidationHistory, read_validation_history
from coseg.engines.inference import HistoInferenceWriter, write_histo_outputs
from coseg.engines.inferers import FULL_RESOLUTION_OUTPUTS, CoSegSlidingWindowInferer
from coseg.engines.metrics import metric_slug, validation_metrics
from coseg.engines.postprocessing import CoSegPostProcessd, PredKeys
from coseg.engines.prepare_batch import LABEL_KEYS, PrepareBatchCoSeg
from coseg.engines.report import EvaluationReport
from coseg.engines.transforms import CheckLabelsd, CheckRGBd, FlattenEngineOutputd, RandHEDJitterd, SAM2Normalized

__all__ = [
    "FULL_RESOLUTION_OUTPUTS",
    "LABEL_KEYS",
    "CoSegSlidingWindowInferer",
    "CheckLabelsd",
    "CheckRGBd",
    "CheckVolumed",
    "DentalEvaluationReport",
    "DentalInferenceWriter",
    "VolumeSliceInferer",
    "cbct_cases",
    "cbct_datalist",
    "volume_datalist",
    "CoSegPostProcessd",
    "EvaluationReport",
    "FlattenEngineOutputd",
    "HistoInferenceWriter",
    "LossTermsHandler",
    "OverlayWriter",
    "PredKeys",
    "PrepareBatchCoSeg",
    "ProgressBar",
    "RandHEDJitterd",
    "SAM2Normalized",
    "TrainingCheckpointLoader",
    "TrainingCheckpointSaver",
    "ValidationHistory",
    "check_dataset_classes",
    "dataset_classes",
    "find_bundle_root",
    "finish_distributed",
    "histo_datalist",
    "image_datalist",
    "loss_value",
    "metric_slug",
    "rank_zero_handlers",
    "read_validation_history",
    "trainable_parameters",
    "validation_metrics",
    "write_histo_outputs",
]
