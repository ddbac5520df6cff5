"""stdyn: how much static and dynamic information deep video networks encode.

``measure(model, clips, layers)`` runs the whole pipeline (pairs, probe, estimator);
``layerwise`` and ``unitwise`` apply the estimator to pooled features you already have.
"""
from stdyn.core.estimator import PairStats, layerwise, unitwise
from stdyn.core.probe import Measurement, measure

__all__ = ["Measurement", "PairStats", "layerwise", "measure", "unitwise"]
__version__ = "0.1.0"
