"""Generic MONAI / ignite glue used by both bundles' configs: batches, handlers, validation metrics, history.

Domain code (readers, inference writers, reports) lives in :mod:`coseg.histo` and :mod:`coseg.dental`; the
bundles only wire these together, every ``$`` expression in their configs being at most one call.
"""

from coseg.engines.checkpoints import (
    BestModelSaver,
    CheckpointLoader,
    TrainingCheckpointLoader,
    TrainingCheckpointSaver,
    find_resume_checkpoint,
)
from coseg.engines.config import find_bundle_root, flag, trainable_parameters
from coseg.engines.handlers import (
    LossTermsHandler,
    OverlayWriter,
    ProgressBar,
    finish_distributed,
    loss_value,
    rank_zero_handlers,
)
from coseg.engines.history import ValidationHistory, read_validation_history
from coseg.engines.metrics import validation_metrics
from coseg.engines.prepare_batch import LABEL_KEYS, PrepareBatchCoSeg

__all__ = [
    "LABEL_KEYS",
    "BestModelSaver",
    "CheckpointLoader",
    "LossTermsHandler",
    "OverlayWriter",
    "PrepareBatchCoSeg",
    "ProgressBar",
    "TrainingCheckpointLoader",
    "TrainingCheckpointSaver",
    "ValidationHistory",
    "find_bundle_root",
    "find_resume_checkpoint",
    "finish_distributed",
    "flag",
    "loss_value",
    "rank_zero_handlers",
    "read_validation_history",
    "trainable_parameters",
    "validation_metrics",
]
