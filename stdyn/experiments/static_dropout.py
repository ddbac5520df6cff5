"""The StaticDropout study's measurements (paper Sec. 5.2, Figs. 13 and 14): each trained variant
measured, scored on ordered and frame-shuffled clips and, on a long-tailed world, per class.

>>> runs = variant_runs(entries, rates, "quick", compositional="something_else", world_kwargs=...)
>>> study = seed_means(runs)    # one row per (world, depth, variant): estimates combined over seeds
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from stdyn.core import claims
from stdyn.experiments import surveys
from stdyn.training import profiles, zoo

RunKey = tuple[str, int, str, int]  # world, depth, variant, seed
ESTIMATES = ("top1", "relative", "ratio", "dynamic")


def variant_runs(entries: Mapping[RunKey, zoo.ZooEntry], rates: Mapping[str, float | None],
                 profile: str | profiles.Profile, *, compositional: str | None = None,
                 world_kwargs: Mapping[str, dict[str, Any]] | None = None, top_k: Sequence[int] = (1, 2, 3, 4),
                 threshold: float = 0.5, layer: str = "head.pool", seed: int = 0) -> pd.DataFrame:
    """One row per trained variant: its entry, StaticDropout ``rate`` (``rates[variant]``, None for
    the baselines), top-1 on ordered held-out clips, the relative top-1 drop on frame-shuffled ones,
    the dynamic-unit ratio and the percent of dynamic units at ``layer`` (all Estimates with
    bootstrap replicates over clips), and on ``compositional`` the top-1 of the most and least
    common classes (:func:`~stdyn.experiments.surveys.accuracy_by_frequency`)."""
    prof = profiles.get(profile)
    rows = []
    for (world, depth, variant, seed_), entry in entries.items():
        val = zoo.datasets(world, prof)[1]
        units = surveys.measure_entry(entry, world, prof, layers=[layer], seed=seed).unitwise(layer, threshold)
        ordered = surveys.correct_predictions(entry, val)
        shuffled = surveys.correct_predictions(entry, val, shuffle_frames=True)
        top1, top1_shuffled = (surveys.accuracy_estimate(c, seed=seed) for c in (ordered, shuffled))
        by_class = {}
        if world == compositional:
            kwargs = (world_kwargs or {}).get(world)
            train_counts = zoo.datasets(world, prof, world_kwargs=kwargs)[0].class_counts
            by_class = surveys.accuracy_by_frequency(ordered, val.labels.numpy(), train_counts, top_k, seed=seed)
        rows.append({"world": world, "depth": depth, "variant": variant, "rate": rates[variant], "seed": seed_,
                     "entry": entry, "top1": top1, "relative": surveys.relative_drop(top1, top1_shuffled),
                     "ratio": surveys.dynamic_ratio(units), "dynamic": units.percent("dynamic"),
                     "by_class": by_class})
    return pd.DataFrame(rows)


def seed_means(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (world, depth, variant): each estimate combined over the seeds
    (:func:`stdyn.core.claims.combine_seeds`: resample seeds, then clips). Every group draws the
    same seeds, so variants stay paired. ``rate`` is 0 for the baselines."""
    study = runs.groupby(["world", "depth", "variant"], sort=False).agg(
        rate=("rate", "first"), **{name: (name, claims.combine_seeds) for name in ESTIMATES}).reset_index()
    study["rate"] = study["rate"].fillna(0.0)
    return study
