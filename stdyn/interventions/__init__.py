"""What we change using a measurement: unit removal at inference and StaticDropout in training
(paper Sec. 5)."""
from stdyn.interventions.removal import (
    RANK_BY,
    least_biased_units,
    random_units,
    rank_units,
    removal_correct,
    removal_curve,
    removal_runs,
    remove_units,
    top_k_sets,
)
from stdyn.interventions.static_dropout import StaticDropout, StaticDropoutCallback, refresh_static_scores

__all__ = [
    "RANK_BY", "StaticDropout", "StaticDropoutCallback", "least_biased_units", "random_units", "rank_units",
    "refresh_static_scores", "removal_correct", "removal_curve", "removal_runs", "remove_units", "top_k_sets",
]
