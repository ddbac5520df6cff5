"""Experiments: cached measurements of zoo models, surveys over models and worlds, the estimates
the chapters compare, and the testbed checks (:mod:`stdyn.experiments.testbed`)."""
from stdyn.experiments.surveys import (
    BOOTSTRAP,
    FREQUENCY_ENDS,
    Styled,
    Survey,
    accuracy_by_frequency,
    accuracy_estimate,
    correct_predictions,
    dynamic_ratio,
    entry_style_accuracy,
    last_layers,
    mean_estimate,
    measure_entry,
    relative_drop,
    removal_area,
    settling_epoch,
    settling_table,
    stage_labels,
    style_accuracy,
    survey,
    zoo_accuracy,
)

__all__ = [
    "BOOTSTRAP", "FREQUENCY_ENDS", "Styled", "Survey", "accuracy_by_frequency", "accuracy_estimate",
    "correct_predictions", "dynamic_ratio", "entry_style_accuracy", "last_layers", "mean_estimate",
    "measure_entry", "relative_drop", "removal_area", "settling_epoch", "settling_table", "stage_labels", "style_accuracy",
    "survey", "zoo_accuracy",
]
