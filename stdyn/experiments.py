"""What the chapters share: zoo models measured on their world (cached), tidy tables, claims.

>>> study = survey(["slowonly", "fastonly"], ["kinetics", "ssv2"], profile="quick")
>>> study.layers()      # model, world, series, stage, layer, factor, percent, lo, hi
>>> study.units()       # model, world, series, stage, layer, category, percent, lo, hi
>>> study.accuracy()    # model, world, val_acc, train_seconds
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from stdyn import profiles, zoo
from stdyn.cache import config_key, load_tensors
from stdyn.estimator import Estimate
from stdyn.probe import Measurement, measure

BOOTSTRAP = {"smoke": 20, "quick": 200, "full": 1000}


def measure_entry(entry: zoo.ZooEntry, world: str, profile: str | profiles.Profile, *,
                  layers: Sequence[str] | None = None, epoch: int | None = None, bootstrap: int | None = None,
                  seed: int = 0, world_kwargs: dict[str, Any] | None = None, progress: bool = True) -> Measurement:
    """Measure a zoo model (or one of its epoch checkpoints) on ``world``'s held-out measurement set.

    The result is cached beside the model's checkpoints, keyed by everything that changes it.
    """
    prof = profiles.get(profile)
    bootstrap = BOOTSTRAP.get(prof.name, 200) if bootstrap is None else bootstrap
    model = entry.model if epoch is None else entry.checkpoint(epoch)
    layers = list(layers) if layers is not None else [stage.name for stage in model.stages]
    key = config_key({"world": world, "world_kwargs": world_kwargs, "profile": prof.name, "n": prof.n_measure,
                      "frames": prof.frames, "size": prof.size, "layers": layers, "epoch": epoch,
                      "bootstrap": bootstrap, "seed": seed}, Measurement, measure)
    path = entry.run_dir / f"measurement-{key}.pt"
    cached = load_tensors(path)
    if cached is not None:
        return Measurement.from_state_dict(cached)
    clips = zoo.measure_set(world, prof, world_kwargs=world_kwargs)
    result = measure(model, clips, layers, batch_size=prof.measure_batch_size, seed=seed, device=entry.device,
                     bootstrap=bootstrap, progress=progress)
    result.save(path)
    return result


def stage_labels(model: Any, layers: Iterable[str]) -> pd.DataFrame:
    """For each measured layer: its series (the model, or ``model (slow)`` for a branch) and stage number."""
    kinds = {stage.name: stage.kind for stage in getattr(model, "stages", [])}
    rows, counters = [], {}
    for layer in layers:
        kind = kinds.get(layer, "stage")
        counters[kind] = counters.get(kind, 0) + 1
        rows.append({"layer": layer, "branch": kind if kind in ("slow", "fast") else "", "stage": counters[kind]})
    return pd.DataFrame(rows)


@dataclass
class Survey:
    """Zoo models and their measurements, keyed by (model, world)."""

    profile: str
    entries: dict[tuple[str, str], zoo.ZooEntry] = field(default_factory=dict)
    measurements: dict[tuple[str, str], Measurement] = field(default_factory=dict)

    def _labelled(self, frames: dict[tuple[str, str], pd.DataFrame]) -> pd.DataFrame:
        parts = []
        for (model, world), frame in frames.items():
            labels = stage_labels(self.entries[model, world].model, self.measurements[model, world].layers)
            frame = frame.merge(labels, on="layer", how="left")
            frame.insert(0, "world", world)
            frame.insert(0, "model", model)
            frame.insert(2, "series", np.where(frame["branch"] != "", model + " (" + frame["branch"] + ")", model))
            parts.append(frame)
        return pd.concat(parts, ignore_index=True)

    def layers(self, level: float = 0.95) -> pd.DataFrame:
        """Layer-wise percent of dynamic, static (and identical) units, with intervals, per stage."""
        frame = self._labelled({k: m.to_frame(level=level) for k, m in self.measurements.items()})
        for column in ("fraction", "fraction_lo", "fraction_hi"):
            frame[column.replace("fraction", "percent")] = 100 * frame[column]
        return frame

    def units(self, threshold: float = 0.5, level: float = 0.95) -> pd.DataFrame:
        """Unit-wise percent of dynamic, static, joint, residual and dead units, per stage."""
        return self._labelled({k: m.units_frame(threshold, level) for k, m in self.measurements.items()})

    def accuracy(self) -> pd.DataFrame:
        """Held-out top-1 accuracy and training time of every model."""
        rows = [{"model": model, "world": world, "val_acc": entry.val_accuracy,
                 "train_seconds": float(entry.metrics["seconds"].sum()),
                 "shuffled": bool(entry.config["train"]["shuffle_frames"])}
                for (model, world), entry in self.entries.items()]
        return pd.DataFrame(rows)

    def layerwise(self, model: str, world: str, layer: str | None = None, branch: str | None = None):
        """Layer-wise result of one measured layer (default: the deepest, of ``branch`` if given)."""
        return self.measurements[model, world].layerwise(layer or self.last_layer(model, world, branch))

    def unitwise(self, model: str, world: str, layer: str | None = None, branch: str | None = None,
                 threshold: float = 0.5):
        """Unit-wise result of one measured layer (default: the deepest, of ``branch`` if given)."""
        return self.measurements[model, world].unitwise(layer or self.last_layer(model, world, branch), threshold)

    def last_layer(self, model: str, world: str, branch: str | None = None) -> str:
        """The deepest measured layer of a model (of one branch for SlowFast)."""
        labels = stage_labels(self.entries[model, world].model, self.measurements[model, world].layers)
        if branch is not None:
            labels = labels[labels["branch"] == branch]
        return str(labels["layer"].iloc[-1])


def survey(models: Sequence[str], worlds: Sequence[str], profile: str | profiles.Profile = "quick", *,
           seed: int = 0, shuffle_frames: bool = False, measure_models: bool = True,
           bootstrap: int | None = None, train_overrides: dict[str, Any] | None = None,
           device: str | None = None, progress: bool = True) -> Survey:
    """Train (or load from the zoo) every model on every world, and measure each on its own world."""
    prof = profiles.get(profile)
    result = Survey(prof.name)
    for world in worlds:
        for model in models:
            entry = zoo.get(model, world, profile=prof, seed=seed, shuffle_frames=shuffle_frames,
                            train_overrides=train_overrides, device=device, progress=progress)
            result.entries[model, world] = entry
            if measure_models:
                result.measurements[model, world] = measure_entry(entry, world, prof, bootstrap=bootstrap,
                                                                  seed=seed, progress=progress)
    return result


def correct_predictions(entry: zoo.ZooEntry, dataset: Any, *, shuffle_frames: bool | None = None,
                        seed: int = 0) -> np.ndarray:
    """Per-clip correctness (N,) of a zoo model on ``dataset`` (frames shuffled as it was trained)."""
    from stdyn import train

    shuffle = bool(entry.config["train"]["shuffle_frames"]) if shuffle_frames is None else shuffle_frames
    logits, labels = train.predict(entry.model, dataset, shuffle_frames=shuffle, seed=seed, device=entry.device)
    return (logits.argmax(1) == labels).numpy()


def accuracy_estimate(correct: np.ndarray, *, replicates: int = 1000, seed: int = 0) -> Estimate:
    """Top-1 accuracy in percent with bootstrap replicates over clips (paired when ``seed`` matches)."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(correct), size=(replicates, len(correct)))
    return Estimate(100.0 * correct.mean(), 100.0 * correct[draws].mean(1))


def relative_drop(baseline: Estimate, changed: Estimate) -> Estimate:
    """``100 * (baseline - changed) / baseline`` with paired replicates."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return Estimate(100.0 * (baseline.value - changed.value) / baseline.value,
                        100.0 * (baseline.replicates - changed.replicates) / baseline.replicates)


def claim(text: str, paper: str, measured: str, reproduced: bool | None) -> dict[str, Any]:
    """One row of a chapter's claims table (``reproduced=None``: could not be tested in this run)."""
    verdict = {True: "reproduced", False: "not reproduced", None: "not tested"}[reproduced]
    return {"claim": text, "paper": paper, "measured here": measured, "verdict": verdict}


def claims_table(rows: Sequence[dict[str, Any]]) -> Any:
    """The claims as a styled table: green when reproduced, red when not."""
    frame = pd.DataFrame(rows)
    colours = {"reproduced": "background-color: #d9f2d9", "not reproduced": "background-color: #f8d7d3"}
    return frame.style.map(lambda v: colours.get(v, ""), subset=["verdict"]).hide(axis="index")
