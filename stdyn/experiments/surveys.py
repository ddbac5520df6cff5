"""What the chapters share: zoo models measured on their world (cached), tidy tables, estimates.

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
import torch

from stdyn.core import estimator, pairs, probe, stylize
from stdyn.core.claims import combine_seeds
from stdyn.core.estimator import Estimate
from stdyn.core.probe import Measurement, measure
from stdyn.data.cache import config_key, load_tensors, save_tensors
from stdyn.training import profiles, zoo

BOOTSTRAP = {"smoke": 20, "quick": 200, "full": 1000}
BRANCHES = ("slow", "fast", "appearance", "motion", "fusion")


def measure_entry(entry: zoo.ZooEntry, world: str, profile: str | profiles.Profile, *,
                  layers: Sequence[str] | None = None, epoch: int | None = None, bootstrap: int | None = None,
                  seed: int = 0, world_kwargs: dict[str, Any] | None = None, progress: bool = True) -> Measurement:
    """Measure a zoo model (or one of its epoch checkpoints) on ``world``'s held-out measurement set,
    with its task's pairs (:meth:`stdyn.tasks.base.Task.measure_items`).

    The result is cached beside the model's checkpoints, keyed by everything that changes it.
    """
    prof = profiles.get(profile)
    task = entry.task
    bootstrap = BOOTSTRAP.get(prof.name, 200) if bootstrap is None else bootstrap
    model = entry.model if epoch is None else entry.checkpoint(epoch)
    layers = list(layers) if layers is not None else task.default_layers(model)
    key = config_key({"world": world, "world_kwargs": world_kwargs, "profile": prof.name, "task": task.name,
                      "n": task.measure_count(prof), "data": task.data_sizes(prof, 0), "layers": layers,
                      "epoch": epoch, "bootstrap": bootstrap, "seed": seed},
                     probe, pairs, stylize, estimator, type(task))  # the probe module: pooling and hooks too
    path = entry.run_dir / f"measurement-{key}.pt"
    cached = load_tensors(path)
    if cached is not None:
        return Measurement.from_state_dict(cached)
    items = task.measure_items(zoo.measure_set(world, prof, world_kwargs=world_kwargs))
    result = measure(model, items, layers, pairs=task.pair_builder(items), batch_size=prof.measure_batch_size,
                     seed=seed, device=entry.device, bootstrap=bootstrap, progress=progress)
    result.save(path)
    return result


def stage_labels(model: Any, layers: Iterable[str]) -> pd.DataFrame:
    """For each measured layer: its branch ("slow"/"fast" for SlowFast, "appearance"/"motion"/
    "fusion" for two-stream models, else "") and its stage number, counted over all of the model's
    stages (of its branch), whichever were measured, unless the stage gives its own number."""
    numbers, counters = {}, {}
    for stage in getattr(model, "stages", []):
        branch = stage.kind if stage.kind in BRANCHES else ""
        counters[branch] = counters.get(branch, 0) + 1
        numbers[stage.name] = (branch, getattr(stage, "number", None) or counters[branch])
    rows = []
    for position, layer in enumerate(layers, start=1):
        branch, number = numbers.get(layer, ("", position))  # a layer outside the stages: its position
        rows.append({"layer": layer, "branch": branch, "stage": number})
    return pd.DataFrame(rows)


def last_layers(model: Any) -> list[str]:
    """The deepest stage of each branch of a model (one layer, or SlowFast's last slow and fast)."""
    labels = stage_labels(model, [stage.name for stage in model.stages])
    return labels.groupby("branch", sort=False)["layer"].last().tolist()


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
        """Held-out score (``val_acc`` top-1, ``val_miou`` for segmentation) and training time of every model."""
        rows = [{"model": model, "world": world, f"val_{entry.task.metric}": entry.val_score,
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
    runs = [(model, world) for world in worlds for model in models]
    entries = zoo.get_many([dict(model=model, world=world, profile=prof, seed=seed, shuffle_frames=shuffle_frames,
                                 train_overrides=train_overrides, device=device) for model, world in runs],
                           progress=progress)
    for (model, world), entry in zip(runs, entries):
        result.entries[model, world] = entry
        if measure_models:
            result.measurements[model, world] = measure_entry(entry, world, prof, bootstrap=bootstrap,
                                                              seed=seed, progress=progress)
    return result


def zoo_accuracy(models: Sequence[str], worlds: Sequence[str], profile: str | profiles.Profile = "quick", *,
                 seed: int = 0, styles: bool = True, device: str | None = None, progress: bool = True) -> pd.DataFrame:
    """Train (or load) every model on every world; one row each: held-out top-1, chance, training
    seconds and, with ``styles``, the mean top-1 over the four measurement styles."""
    from stdyn.data import worlds as world_registry

    prof = profiles.get(profile)
    runs = [(model, world) for world in worlds for model in models]
    entries = zoo.get_many([dict(model=model, world=world, profile=prof, seed=seed, device=device)
                            for model, world in runs], progress=progress)
    rows = []
    for (model, world), entry in zip(runs, entries):
        row = {"model": model, "world": world, "val_acc": entry.val_accuracy,
               "chance": 1.0 / len(world_registry.spec(world).classes),
               "train_seconds": float(entry.metrics["seconds"].sum())}
        if styles:
            row["styled_acc"] = float(entry_style_accuracy(entry, world, prof).drop("original").mean()) / 100
        rows.append(row)
    return pd.DataFrame(rows)


def correct_predictions(entry: zoo.ZooEntry, dataset: Any, *, shuffle_frames: bool | None = None,
                        seed: int = 0) -> np.ndarray:
    """Per-clip correctness (N,) of a zoo model on ``dataset`` (frames shuffled as it was trained)."""
    from stdyn import training

    shuffle = bool(entry.config["train"]["shuffle_frames"]) if shuffle_frames is None else shuffle_frames
    logits, labels = training.predict(entry.model, dataset, shuffle_frames=shuffle, seed=seed, device=entry.device)
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


# ----------------------------------------------------------------------------- training dynamics, interventions


def settling_epoch(curve: pd.Series, final: Estimate | None = None, *, tolerance: float = 0.0,
                   level: float = 0.95) -> int:
    """The first epoch from which ``curve`` (values indexed by epoch, ascending) stays settled.

    Settled means inside the final value's band: the ``level`` bootstrap interval of ``final``
    (the estimate at the last epoch), widened where needed to ``tolerance`` points either side of
    the last value. Without ``final`` the band is the last value +- ``tolerance``. The last epoch
    is always settled, so the result is at most the last epoch.
    """
    if len(curve) == 0:
        raise ValueError("settling_epoch needs a curve with at least one epoch")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0 points, got {tolerance}")
    if not curve.index.is_monotonic_increasing or not curve.index.is_unique:
        raise ValueError("the curve must be indexed by distinct epochs in ascending order (sort_index() first)")
    values = curve.to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError("the curve holds NaN or infinite values; measure every epoch before asking when it settles")
    last = values[-1]
    low, high = last - tolerance, last + tolerance
    if final is not None:
        lo, hi = final.interval(level)
        low, high = min(low, lo) if np.isfinite(lo) else low, max(high, hi) if np.isfinite(hi) else high
    outside = np.flatnonzero((values < low) | (values > high))
    first_settled = 0 if len(outside) == 0 else outside[-1] + 1
    return int(curve.index[first_settled])


def settling_table(curves: pd.DataFrame, final: Survey, keys: Sequence[str], *, tolerance: float = 0.0,
                   level: float = 0.95) -> pd.DataFrame:
    """When each curve of a checkpoint table settles (:func:`settling_epoch`).

    ``curves`` has columns model, world, layer, factor, epoch and percent (e.g.
    ``Survey.layers()`` of every checkpoint, with ``epoch``); ``keys`` are the columns that tell
    one curve from another (they must fix model, world, layer and factor). ``final`` is the survey
    of the last checkpoint, whose intervals make the bands. One row per curve: the keys, the
    layer, the settling epoch, the final value with its interval, and how far the curve moved.
    """
    rows = []
    for values, curve in curves.groupby(list(keys), sort=False):
        first = curve.iloc[0]
        if curve[["model", "world", "layer", "factor"]].drop_duplicates().shape[0] != 1:
            raise ValueError(f"the keys {list(keys)} do not single out one curve: {dict(zip(keys, values))} "
                             "spans several models, worlds, layers or factors")
        estimate = final.layerwise(first["model"], first["world"], first["layer"]).percent(first["factor"])
        series = curve.set_index("epoch")["percent"].sort_index()
        rows.append({**dict(zip(keys, values)), "layer": first["layer"],
                     "settled at epoch": settling_epoch(series, estimate, tolerance=tolerance, level=level),
                     "final (%)": str(estimate), "moved (points)": float(series.max() - series.min())})
    return pd.DataFrame(rows)


def dynamic_ratio(result: Any) -> Estimate:
    """Dynamic units over dynamic plus static units of a ``UnitwiseResult``, in percent (the
    paper's Fig. 13 metric, from eq. 3), with its bootstrap replicates (NaN where a replicate has
    neither)."""
    dynamic, static = result.percent("dynamic"), result.percent("static")
    with np.errstate(invalid="ignore", divide="ignore"):
        replicates = 100.0 * dynamic.replicates / (dynamic.replicates + static.replicates)
    return Estimate(100.0 * result.dynamic_ratio, replicates)


def mean_estimate(estimates: Iterable[Estimate]) -> Estimate:
    """The mean of estimates of one quantity (e.g. over training seeds), replicate by replicate.

    Its interval is the bootstrap interval over clips of the mean; the spread between the seeds
    themselves is not in it (:func:`stdyn.core.claims.combine_seeds` resamples seeds, then clips).
    """
    estimates = list(estimates)  # also a pandas Series of estimates (e.g. in groupby().agg)
    if not estimates:
        raise ValueError("mean_estimate needs at least one estimate")
    if len({len(e.replicates) for e in estimates}) > 1:
        raise ValueError("estimates with different numbers of bootstrap replicates cannot be averaged")
    with np.errstate(invalid="ignore"):  # inf and -inf replicates average to NaN, which leaves the interval
        return Estimate(float(np.mean([e.value for e in estimates])),
                        np.mean([e.replicates for e in estimates], axis=0))


def removal_area(table: pd.DataFrame, ks: Iterable[int], *, column: str = "correct", replicates: int = 1000,
                 seed: int = 0) -> dict[str, Estimate]:
    """Mean top-1 (percent) over the removed ``ks`` of each kind of a
    :func:`stdyn.interventions.removal_correct` table (the area under its removal curve); with
    ``column`` naming per-clip scores in [0, 1] instead (e.g. each clip's mIoU), their mean in percent.

    Replicates resample clips (the same resamples for every kind, so kinds pair); a kind with
    several draws (the random baseline) is combined over its draws with
    :func:`stdyn.core.claims.combine_seeds`, resampling draws, then clips.
    """
    ks = [int(k) for k in ks]
    if not ks:
        raise ValueError("removal_area needs at least one k")
    chosen = table[table["k"].isin(ks)]
    areas = {}
    for kind, runs in chosen.groupby("kind", sort=False):
        per_draw = []
        for draw, group in runs.groupby("draw", sort=True):
            missing = sorted(set(ks) - set(group["k"]))
            if missing:
                raise ValueError(f"the {kind!r} runs (draw {draw}) have no k = {missing}")
            per_draw.append(mean_estimate(accuracy_estimate(np.asarray(c), replicates=replicates, seed=seed)
                                          for c in group.sort_values("k")[column]))
        areas[str(kind)] = combine_seeds(per_draw, seed=seed)
    return areas


FREQUENCY_ENDS = ("most", "least")


def accuracy_by_frequency(correct: np.ndarray, labels: np.ndarray, class_counts: Sequence[int],
                          ks: Iterable[int], *, replicates: int = 1000,
                          seed: int = 0) -> dict[tuple[str, int], Estimate]:
    """Mean per-class top-1 accuracy (percent) over the ``k`` most and least common classes
    (paper Fig. 14, bottom), keyed ``("most", k)`` and ``("least", k)``.

    ``correct`` and ``labels`` are per held-out clip; ``class_counts`` are the training clips of
    each class (what makes a class common). Ties in frequency keep class order. Replicates
    resample clips as :func:`accuracy_estimate` does, so the same ``seed`` pairs two models
    scored on the same clips; a class without clips in a resample is left out of its mean.
    """
    correct = np.asarray(correct, dtype=bool)
    labels = np.asarray(labels)
    counts = np.asarray(class_counts)
    n_classes = len(counts)
    if correct.shape != labels.shape or correct.ndim != 1 or len(correct) == 0:
        raise ValueError(f"correct and labels must be two non-empty vectors (N,) of the same length, "
                         f"got shapes {correct.shape} and {labels.shape}")
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"labels must lie in [0, {n_classes}) (one count per class), "
                         f"got {labels.min()}..{labels.max()}")
    ks = [int(k) for k in ks]
    if any(not 1 <= k <= n_classes for k in ks):
        raise ValueError(f"every k must lie in [1, {n_classes}] classes, got {ks}")
    draws = np.random.default_rng(seed).integers(0, len(correct), size=(replicates, len(correct)))
    samples = [(labels, correct)] + [(labels[d], correct[d]) for d in draws]
    # Per sample (estimate first, then replicates) and class: accuracy, NaN without clips.
    per_class = np.full((len(samples), n_classes), np.nan)
    for row, (sample_labels, sample_correct) in enumerate(samples):
        seen = np.bincount(sample_labels, minlength=n_classes)
        right = np.bincount(sample_labels, weights=sample_correct, minlength=n_classes)
        per_class[row, seen > 0] = right[seen > 0] / seen[seen > 0]
    orders = {"most": np.argsort(-counts, kind="stable"), "least": np.argsort(counts, kind="stable")}
    result = {}
    for end in FREQUENCY_ENDS:
        for k in ks:
            chosen = per_class[:, orders[end][:k]]
            present = np.isfinite(chosen).sum(1)  # a resample may miss all k classes: NaN
            with np.errstate(invalid="ignore", divide="ignore"):
                means = 100.0 * np.nansum(chosen, axis=1) / np.where(present > 0, present, np.nan)
            result[end, k] = Estimate(float(means[0]), means[1:])
    return result


class Styled:
    """The clips of ``dataset`` rendered in one style of :mod:`stdyn.core.stylize`, with their labels.

    Clips are stylized ``block`` at a time (a style is one vectorised transform over a batch,
    many times faster than clip by clip) and the last block is kept, so reading the dataset in
    order, as evaluation does, stylizes every clip once.
    """

    def __init__(self, dataset: Any, style: str, block: int = 64) -> None:
        self.dataset, self.style, self.block = dataset, style, block
        self._cached: tuple[int, Any, list[Any]] | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        start = index - index % self.block
        if self._cached is None or self._cached[0] != start:
            items = [self.dataset[i][:2] for i in range(start, min(start + self.block, len(self.dataset)))]
            clips = stylize.stylize(torch.stack([clip for clip, _ in items]), self.style)
            self._cached = (start, clips, [label for _, label in items])
        _, clips, labels = self._cached
        return clips[index - start], labels[index - start]


def style_accuracy(model: Any, dataset: Any, *, styles: Sequence[str] | None = None, batch_size: int = 64,
                   device: Any = "cpu") -> pd.Series:
    """Top-1 accuracy (%) of ``model`` on ``dataset`` as it is ("original") and in each style.

    A dynamic pair shows one clip in two styles (:mod:`stdyn.core.stylize`). A model that is near
    chance on stylized clips has features that do not carry a clip's motion across a style
    change, so its dynamic scores stay low whatever it learned about motion.
    """
    from stdyn import training
    views = {"original": dataset, **{style: Styled(dataset, style) for style in (styles or stylize.STYLES)}}
    return pd.Series({name: 100.0 * training.evaluate(model, view, batch_size=batch_size, device=device)
                      for name, view in views.items()}, name="top-1 (%)")


def entry_style_accuracy(entry: zoo.ZooEntry, world: str, profile: str | profiles.Profile) -> pd.Series:
    """:func:`style_accuracy` of a zoo model on ``world``'s measurement set (the clips it is measured
    on), cached beside the model's checkpoints."""
    prof = profiles.get(profile)
    key = config_key({"world": world, "profile": prof.name, "n": prof.n_measure, "frames": prof.frames,
                      "size": prof.size, "styles": list(stylize.STYLES)}, style_accuracy, Styled, stylize)
    path = entry.run_dir / f"style-accuracy-{key}.pt"
    cached = load_tensors(path)
    if cached is None:
        accuracy = style_accuracy(entry.model, zoo.measure_set(world, prof, progress=False),
                                  batch_size=prof.measure_batch_size, device=entry.device)
        save_tensors(path, {"accuracy": accuracy.to_dict()})
        return accuracy
    return pd.Series(cached["accuracy"], name="top-1 (%)")
