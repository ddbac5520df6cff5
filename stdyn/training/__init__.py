"""Training: configurations and schedules, the seeded, resumable loop, augmentation, the compute
profiles and the model cache (:mod:`stdyn.training.zoo`)."""
from stdyn.training.loop import (
    METRIC_COLUMNS,
    OPTIMIZERS,
    POLY_POWER,
    SCHEDULES,
    Callback,
    TrainConfig,
    TrainState,
    apply_frame_orders,
    checkpoint_path,
    derive_seed,
    evaluate,
    fit,
    frame_orders,
    load_weights,
    lr_schedule,
    metric_columns,
    predict,
    read_checkpoint,
    resolve_device,
    saved_epochs,
)

__all__ = [
    "METRIC_COLUMNS", "OPTIMIZERS", "POLY_POWER", "SCHEDULES", "Callback", "TrainConfig", "TrainState",
    "apply_frame_orders", "checkpoint_path", "derive_seed", "evaluate", "fit", "frame_orders", "load_weights",
    "lr_schedule", "metric_columns", "predict", "read_checkpoint", "resolve_device", "saved_epochs",
]
