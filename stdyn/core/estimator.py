"""The static/dynamic estimator of Kowal et al. (paper Sec. 3.2), from streaming statistics.

For one layer with C channels and pooled features ``z`` (one vector per video), each factor F
(static, dynamic) has pairs ``(z1_F, z2_F)``. With ``m`` and ``V`` the per-channel mean and the
total variance (summed over channels, ddof 0) pooled over all factors and both members, and
``mu_F = (mean(z1_F) + mean(z2_F)) / 2``:

- layer-wise score ``S_F = sum_c mean_n[(z1_F - mu_F)(z2_F - mu_F)] / V``; the identical factor
  scores 1; fractions are ``softmax([S_dynamic, S_static, 1])``, units ``floor(fraction * C)``;
- unit-wise score ``s_F[c] = mean_n[(z1_F - mu_F)(z2_F - mu_F)] / var(concat(z1_F, z2_F))[c]``,
  thresholded into dynamic, static, joint and residual units; zero-variance channels are dead.

This normalised form is what the authors' released code computes and what the paper's numbers
come from; ``method="pearson"`` gives the per-channel Pearson mean that eq. (1) prints.

All statistics are float64 sufficient statistics (shifted per batch, merged with Chan's
formulas), so memory is O(C) whatever the number of pairs, shards merge exactly, and a Poisson
bootstrap over videos (each replicate weights each video by a seeded Poisson(1) draw) streams
and merges the same way.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

FACTORS = ("static", "dynamic")
LAYER_FACTORS = ("dynamic", "static", "identical")
CATEGORIES = ("dynamic", "static", "joint", "residual", "dead")
METHODS = ("normalized", "pearson")
# Per-factor statistics, each shaped (replicates, channels) except the count (replicates,).
_MOMENTS = ("mean1", "mean2", "m2_1", "m2_2", "c12")
# A channel whose variance is below (DEAD_TOLERANCE * max(1, |mean|))**2 is constant: dead.
DEAD_TOLERANCE = 1e-12


def _as_float64(z: Any, what: str) -> np.ndarray:
    if isinstance(z, torch.Tensor):
        z = z.detach().to("cpu", torch.float64).numpy()
    array = np.asarray(z, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{what}: expected pooled features shaped (N, C), got shape {array.shape}")
    return array


def _check_factor(factor: str) -> None:
    if factor not in FACTORS:
        raise ValueError(f"unknown factor {factor!r}; expected one of {FACTORS}")


def bootstrap_weights(ids: Sequence[int], replicates: int, seed: int) -> np.ndarray:
    """Poisson(1) weights, shaped (replicates, len(ids)), a fixed function of (seed, video id).

    A video gets the same weights in every factor, batch and shard, so resampling is over videos.
    """
    return np.stack(
        [np.random.default_rng([seed, int(i)]).poisson(1.0, replicates) for i in ids], axis=1
    ).astype(np.float64)


class PairStats:
    """Mergeable sufficient statistics of static and dynamic pairs for one layer.

    ``update`` adds pairs, ``merge`` combines shards, ``all_reduce`` combines processes, and
    ``layerwise`` / ``unitwise`` compute the results. With ``bootstrap=R`` it also keeps R
    Poisson-bootstrap replicates (pass each pair's video id to ``update``).
    """

    def __init__(self, n_channels: int, *, bootstrap: int = 0, seed: int = 0, name: str = "") -> None:
        if n_channels < 1:
            raise ValueError(f"n_channels must be positive, got {n_channels}")
        if int(bootstrap) < 0:
            raise ValueError(f"bootstrap must be 0 (no intervals) or a number of replicates (2 or more for an "
                             f"interval), got {bootstrap}")
        self.n_channels = int(n_channels)
        self.bootstrap = int(bootstrap)
        self.seed = int(seed)
        self.name = name
        rows = 1 + self.bootstrap
        self.count = {f: np.zeros(rows) for f in FACTORS}
        self.moments = {f: {k: np.zeros((rows, self.n_channels)) for k in _MOMENTS} for f in FACTORS}

    # ----------------------------------------------------------------------------- updating
    def update(self, factor: str, z1: Any, z2: Any, ids: Sequence[int] | None = None) -> None:
        """Add a batch of pairs of ``factor``: ``z1``, ``z2`` shaped (N, C)."""
        _check_factor(factor)
        where = f"layer {self.name!r}" if self.name else "features"
        z1, z2 = _as_float64(z1, where), _as_float64(z2, where)
        if z1.shape != z2.shape:
            raise ValueError(f"{where}: pair members differ in shape: {z1.shape} vs {z2.shape}")
        if z1.shape[1] != self.n_channels:
            raise ValueError(
                f"{where}: expected {self.n_channels} channels (N, {self.n_channels}), got {z1.shape}"
            )
        if len(z1) == 0:
            return
        if not (np.isfinite(z1).all() and np.isfinite(z2).all()):
            raise ValueError(
                f"{where}: NaN or infinite activations in {factor} pairs; check the model's "
                "numerics (e.g. run in float32, lower the learning rate) before measuring"
            )
        weights = np.ones((1, len(z1)))
        if self.bootstrap:
            if ids is None or len(ids) != len(z1):
                raise ValueError("bootstrap needs one video id per pair: update(..., ids=[...])")
            weights = np.concatenate([weights, bootstrap_weights(ids, self.bootstrap, self.seed)])
        self._merge_moments(factor, *self._batch_moments(z1, z2, weights))

    @staticmethod
    def _batch_moments(z1: np.ndarray, z2: np.ndarray, weights: np.ndarray):
        # Shift by the batch mean so that large channel means do not cancel precision.
        shift1, shift2 = z1.mean(0), z2.mean(0)
        x1, x2 = z1 - shift1, z2 - shift2
        n = weights.sum(1)
        safe_n = np.where(n > 0, n, 1.0)[:, None]
        d1, d2 = weights @ x1 / safe_n, weights @ x2 / safe_n
        moments = {
            "mean1": shift1 + d1,
            "mean2": shift2 + d2,
            "m2_1": weights @ (x1 * x1) - safe_n * d1 * d1,
            "m2_2": weights @ (x2 * x2) - safe_n * d2 * d2,
            "c12": weights @ (x1 * x2) - safe_n * d1 * d2,
        }
        return n, moments

    def _merge_moments(self, factor: str, n_b: np.ndarray, b: dict[str, np.ndarray]) -> None:
        n_a, a = self.count[factor], self.moments[factor]
        n = n_a + n_b
        safe_n = np.where(n > 0, n, 1.0)[:, None]
        frac_b = (n_b[:, None] / safe_n)
        cross = (n_a * n_b)[:, None] / safe_n
        delta1 = b["mean1"] - a["mean1"]
        delta2 = b["mean2"] - a["mean2"]
        self.moments[factor] = {
            "mean1": a["mean1"] + delta1 * frac_b,
            "mean2": a["mean2"] + delta2 * frac_b,
            "m2_1": a["m2_1"] + b["m2_1"] + delta1 * delta1 * cross,
            "m2_2": a["m2_2"] + b["m2_2"] + delta2 * delta2 * cross,
            "c12": a["c12"] + b["c12"] + delta1 * delta2 * cross,
        }
        self.count[factor] = n

    def merge(self, other: PairStats) -> PairStats:
        """Add another shard's statistics (same channels and bootstrap settings) to this one."""
        if (other.n_channels, other.bootstrap, other.seed) != (self.n_channels, self.bootstrap, self.seed):
            raise ValueError(
                "cannot merge statistics with different channels/bootstrap/seed: "
                f"{(self.n_channels, self.bootstrap, self.seed)} vs "
                f"{(other.n_channels, other.bootstrap, other.seed)}"
            )
        for factor in FACTORS:
            self._merge_moments(factor, other.count[factor], other.moments[factor])
        return self

    def all_reduce(self) -> PairStats:
        """Merge the statistics of every ``torch.distributed`` process, in rank order, in place.

        Every process ends with the same merged statistics as a single process would have.
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self
        flat = torch.from_numpy(self._flatten())
        gathered = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, flat)
        merged = PairStats(self.n_channels, bootstrap=self.bootstrap, seed=self.seed, name=self.name)
        for shard in gathered:
            merged.merge(self._unflatten(shard.numpy()))
        self.count, self.moments = merged.count, merged.moments
        return self

    def _flatten(self) -> np.ndarray:
        parts = []
        for factor in FACTORS:
            parts.append(self.count[factor])
            parts.extend(self.moments[factor][k].ravel() for k in _MOMENTS)
        return np.concatenate(parts)

    def _unflatten(self, flat: np.ndarray) -> PairStats:
        stats = PairStats(self.n_channels, bootstrap=self.bootstrap, seed=self.seed, name=self.name)
        rows, offset = 1 + self.bootstrap, 0
        for factor in FACTORS:
            stats.count[factor] = flat[offset : offset + rows].copy()
            offset += rows
            for k in _MOMENTS:
                size = rows * self.n_channels
                stats.moments[factor][k] = flat[offset : offset + size].reshape(rows, -1).copy()
                offset += size
        return stats

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume or combine later (plain arrays), with its format version."""
        return {
            "format": STATE_FORMAT, "n_channels": self.n_channels, "bootstrap": self.bootstrap, "seed": self.seed,
            "name": self.name, "state": self._flatten(),
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> PairStats:
        found = state.get("format", "pairstats/1")  # the first format carried no version
        if found not in (STATE_FORMAT, "pairstats/1"):
            raise ValueError(f"pair statistics in format {found!r}, which this stdyn ({STATE_FORMAT!r}) cannot read; "
                             "measure again, or read them with the stdyn version that wrote them")
        template = cls(state["n_channels"], bootstrap=state["bootstrap"], seed=state["seed"], name=state["name"])
        flat = np.asarray(state["state"], dtype=np.float64)
        expected = len(template._flatten())
        if flat.shape != (expected,):
            raise ValueError(f"pair statistics of layer {state['name']!r} hold {flat.size} numbers; {expected} expected "
                             f"for {state['n_channels']} channels and {state['bootstrap']} replicates (damaged file?)")
        return template._unflatten(flat)

    @property
    def n_pairs(self) -> dict[str, int]:
        """Pairs seen per factor."""
        return {f: int(round(self.count[f][0])) for f in FACTORS}

    # ----------------------------------------------------------------------------- results
    def _require_pairs(self) -> None:
        short = {f: n for f, n in self.n_pairs.items() if n < 2}
        if short:
            where = f" in layer {self.name!r}" if self.name else ""
            raise ValueError(
                f"need at least 2 pairs of each factor{where}, got {self.n_pairs}; measure more clips"
            )

    def _factor_terms(self, factor: str) -> tuple[np.ndarray, np.ndarray]:
        """Per replicate and channel: mean_n[(z1 - mu)(z2 - mu)] and var(concat(z1, z2))."""
        m = self.moments[factor]
        n = np.where(self.count[factor] > 0, self.count[factor], np.nan)[:, None]
        half_gap_sq = (m["mean1"] - m["mean2"]) ** 2 / 4.0
        cross = m["c12"] / n - half_gap_sq
        variance = (m["m2_1"] + m["m2_2"]) / (2.0 * n) + half_gap_sq
        return cross, variance

    def _total_variance(self) -> np.ndarray:
        """V per replicate: variance pooled over factors and members, summed over channels."""
        total = sum(2.0 * self.count[f] for f in FACTORS)
        mean = sum(self.count[f][:, None] * (self.moments[f]["mean1"] + self.moments[f]["mean2"]) for f in FACTORS)
        mean = mean / total[:, None]
        squares = sum(
            self.moments[f]["m2_1"] + self.moments[f]["m2_2"]
            + self.count[f][:, None] * ((self.moments[f]["mean1"] - mean) ** 2 + (self.moments[f]["mean2"] - mean) ** 2)
            for f in FACTORS
        )
        return squares.sum(1) / total

    def dead_channels(self) -> np.ndarray:
        """Boolean (C,): channels whose variance is zero in either factor."""
        dead = np.zeros(self.n_channels, dtype=bool)
        for factor in FACTORS:
            dead |= np.isnan(self.factor_unit_scores(factor))
        return dead

    def layer_scores(self, method: str = "normalized") -> dict[str, np.ndarray]:
        """S_F per replicate (row 0 is the estimate) for static and dynamic."""
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
        self._require_pairs()
        scores = {}
        if method == "normalized":
            total_variance = self._total_variance()
            for factor in FACTORS:
                cross, _ = self._factor_terms(factor)
                with np.errstate(invalid="ignore", divide="ignore"):
                    scores[factor] = cross.sum(1) / total_variance
        else:
            alive = ~self.dead_channels()
            for factor in FACTORS:
                m = self.moments[factor]
                with np.errstate(invalid="ignore", divide="ignore"):
                    corr = m["c12"] / np.sqrt(m["m2_1"] * m["m2_2"])
                # A dead layer (every channel constant) has no score, not a score of zero.
                scores[factor] = np.nanmean(corr[:, alive], axis=1) if alive.any() else np.full(len(corr), np.nan)
        return scores

    def layerwise(self, method: str = "normalized") -> LayerwiseResult:
        """The layer-wise result (eq. 1)."""
        scores = self.layer_scores(method)
        stacked = np.stack([scores["dynamic"], scores["static"], np.ones_like(scores["static"])], axis=1)
        fractions = _softmax(stacked)
        return LayerwiseResult(
            name=self.name, method=method, n_channels=self.n_channels, n_pairs=self.n_pairs,
            scores={"dynamic": float(stacked[0, 0]), "static": float(stacked[0, 1]), "identical": 1.0},
            fractions=dict(zip(LAYER_FACTORS, map(float, fractions[0]))),
            units=_units(fractions[0], self.n_channels),
            replicate_fractions=fractions[1:],
            replicate_scores=stacked[1:, :2],
        )

    def unit_scores(self) -> dict[str, np.ndarray]:
        """s_F per replicate and channel (NaN for dead channels)."""
        self._require_pairs()
        dead = self.dead_channels()
        scores = {}
        for factor in FACTORS:
            cross, variance = self._factor_terms(factor)
            with np.errstate(invalid="ignore", divide="ignore"):
                score = cross / variance
            score[:, dead] = np.nan
            scores[factor] = score
        return scores

    def factor_unit_scores(self, factor: str) -> np.ndarray:
        """s_F (C,) of one factor alone (eq. 2), NaN where that factor's variance is zero.

        Needs pairs of ``factor`` only, e.g. a batch and its frame-shuffled copy for StaticDropout.
        """
        _check_factor(factor)
        if self.n_pairs[factor] < 2:
            raise ValueError(f"need at least 2 {factor} pairs, got {self.n_pairs[factor]}")
        cross, variance = self._factor_terms(factor)
        m = self.moments[factor]
        scale = np.maximum(1.0, np.maximum(np.abs(m["mean1"][0]), np.abs(m["mean2"][0])))
        with np.errstate(invalid="ignore", divide="ignore"):
            score = cross[0] / variance[0]
        score[variance[0] <= (DEAD_TOLERANCE * scale) ** 2] = np.nan
        return score

    def unitwise(self, threshold: float = 0.5) -> UnitwiseResult:
        """The unit-wise result (eqs. 2-3) at threshold lambda."""
        scores = self.unit_scores()
        dead = self.dead_channels()
        categories = categorize(scores["static"], scores["dynamic"], threshold, dead)
        replicate_counts = np.array(
            [[np.sum(row == c) for c in CATEGORIES] for row in categories[1:]], dtype=float
        ).reshape(-1, len(CATEGORIES))
        return UnitwiseResult(
            name=self.name, threshold=threshold, n_pairs=self.n_pairs,
            scores={f: scores[f][0] for f in FACTORS},
            categories=categories[0],
            replicate_counts=replicate_counts,
        )


def categorize(static: np.ndarray, dynamic: np.ndarray, threshold: float, dead: np.ndarray) -> np.ndarray:
    """Unit categories (eq. 3) for score arrays of any leading shape ending in C channels."""
    static_hi, dynamic_hi = static > threshold, dynamic > threshold
    categories = np.select(
        [dynamic_hi & ~static_hi, static_hi & ~dynamic_hi, static_hi & dynamic_hi],
        ["dynamic", "static", "joint"],
        default="residual",
    ).astype(object)
    categories[..., dead] = "dead"
    return categories


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - np.nanmax(x, axis=-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _units(fractions: np.ndarray, n_channels: int) -> dict[str, int]:
    if not np.isfinite(fractions[:2]).all():  # a dead layer: every channel constant, nothing encoded
        return {"dynamic": 0, "static": 0, "identical": 0}
    dynamic, static = (int(np.floor(f * n_channels)) for f in fractions[:2])
    return {"dynamic": dynamic, "static": static, "identical": n_channels - dynamic - static}


def _interval(samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    alpha = (1.0 - level) / 2.0
    return np.nanquantile(samples, alpha, axis=0), np.nanquantile(samples, 1.0 - alpha, axis=0)


STATE_FORMAT = "pairstats/1"  # PairStats.state_dict's layout: counts, then moments, per factor
MIN_REPLICATES = 2  # an interval needs at least this many finite bootstrap replicates


@dataclass(frozen=True)
class Estimate:
    """A number with its bootstrap replicates (percent or points), for intervals and differences.

    Differences of estimates measured on the same clips with the same seed are paired: replicate
    r of both resamples the same videos, so ``(a - b).interval()`` is the interval of the
    difference itself.
    """

    value: float
    replicates: np.ndarray = field(repr=False)

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        """Percentile interval of the finite replicates (NaN with fewer than two: one replicate is
        not a spread, and its "interval" need not even contain the estimate)."""
        finite = self.replicates[np.isfinite(self.replicates)]
        if len(finite) < MIN_REPLICATES:
            return (np.nan, np.nan)
        lo, hi = _interval(finite, level)
        return float(lo), float(hi)

    def above(self, threshold: float = 0.0, level: float = 0.95) -> bool:
        """Whether the whole interval lies above ``threshold``: the test a claim "A exceeds B" passes
        only when the difference is clear of zero. False without an interval (a point value alone
        cannot show that)."""
        lo, _ = self.interval(level)
        return bool(not np.isnan(lo) and lo > threshold)

    def __sub__(self, other: Estimate) -> Estimate:
        if len(self.replicates) != len(other.replicates):
            raise ValueError("estimates with different numbers of bootstrap replicates cannot be paired")
        with np.errstate(invalid="ignore"):  # inf - inf (e.g. a ratio over a zero replicate) is NaN
            return Estimate(self.value - other.value, self.replicates - other.replicates)

    def __add__(self, other: Estimate) -> Estimate:
        if len(self.replicates) != len(other.replicates):
            raise ValueError("estimates with different numbers of bootstrap replicates cannot be paired")
        with np.errstate(invalid="ignore"):
            return Estimate(self.value + other.value, self.replicates + other.replicates)

    def __str__(self) -> str:
        if np.isnan(self.value):  # e.g. a ratio over zero units: its replicates' interval would mislead
            return "undefined"
        lo, hi = self.interval()
        return f"{self.value:.1f}" + ("" if np.isnan(lo) else f" [{lo:.1f}, {hi:.1f}]")


@dataclass
class LayerwiseResult:
    """Layer-wise scores, fractions and units, keyed ``"dynamic"``, ``"static"``, ``"identical"``."""

    name: str
    method: str
    n_channels: int
    n_pairs: dict[str, int]
    scores: dict[str, float]
    fractions: dict[str, float]
    units: dict[str, int]
    replicate_fractions: np.ndarray = field(repr=False)
    replicate_scores: np.ndarray = field(repr=False)

    def interval(self, level: float = 0.95) -> dict[str, tuple[float, float]]:
        """Bootstrap percentile interval of each fraction (NaN without bootstrap replicates)."""
        if len(self.replicate_fractions) == 0:
            return {f: (np.nan, np.nan) for f in LAYER_FACTORS}
        lo, hi = _interval(self.replicate_fractions, level)
        return {f: (float(lo[i]), float(hi[i])) for i, f in enumerate(LAYER_FACTORS)}

    def percent(self, factor: str) -> Estimate:
        """The share of units encoding ``factor``, in percent, with its bootstrap replicates."""
        column = LAYER_FACTORS.index(factor)
        return Estimate(100.0 * self.fractions[factor], 100.0 * self.replicate_fractions[:, column])

    def to_frame(self, level: float = 0.95) -> pd.DataFrame:
        """One row per factor: score, fraction (with interval), units."""
        interval = self.interval(level)
        return pd.DataFrame(
            {
                "layer": self.name, "factor": f, "score": self.scores[f],
                "fraction": self.fractions[f], "fraction_lo": interval[f][0],
                "fraction_hi": interval[f][1], "units": self.units[f],
                "channels": self.n_channels, "method": self.method,
            }
            for f in LAYER_FACTORS
        )


@dataclass
class UnitwiseResult:
    """Per-channel static and dynamic scores and the category of every channel."""

    name: str
    threshold: float
    n_pairs: dict[str, int]
    scores: dict[str, np.ndarray]
    categories: np.ndarray
    replicate_counts: np.ndarray = field(repr=False)

    @property
    def counts(self) -> dict[str, int]:
        """Channels per category (dynamic, static, joint, residual, dead)."""
        return {c: int(np.sum(self.categories == c)) for c in CATEGORIES}

    @property
    def dynamic_ratio(self) -> float:
        """Dynamic units over dynamic plus static units (the paper's Fig. 13 metric)."""
        counts = self.counts
        both = counts["dynamic"] + counts["static"]
        return counts["dynamic"] / both if both else float("nan")

    def percent(self, category: str) -> Estimate:
        """The percent of channels in ``category``, with its bootstrap replicates."""
        column = CATEGORIES.index(category)
        total = len(self.categories)
        return Estimate(100.0 * self.counts[category] / total, 100.0 * self.replicate_counts[:, column] / total)

    def interval(self, level: float = 0.95) -> dict[str, tuple[float, float]]:
        """Bootstrap percentile interval of each category's count."""
        if len(self.replicate_counts) == 0:
            return {c: (np.nan, np.nan) for c in CATEGORIES}
        lo, hi = _interval(self.replicate_counts, level)
        return {c: (float(lo[i]), float(hi[i])) for i, c in enumerate(CATEGORIES)}

    def to_frame(self) -> pd.DataFrame:
        """One row per channel: its static and dynamic scores and its category."""
        return pd.DataFrame(
            {
                "layer": self.name, "channel": np.arange(len(self.categories)),
                "static": self.scores["static"], "dynamic": self.scores["dynamic"],
                "category": self.categories,
            }
        )

    def summary(self, level: float = 0.95) -> pd.DataFrame:
        """One row per category: count, percent of channels, and its interval."""
        total = len(self.categories)
        interval = self.interval(level)
        return pd.DataFrame(
            {
                "layer": self.name, "category": c, "count": n, "percent": 100.0 * n / total,
                "percent_lo": 100.0 * interval[c][0] / total, "percent_hi": 100.0 * interval[c][1] / total,
            }
            for c, n in self.counts.items()
        )


def _stats_from_pairs(pairs: Mapping[str, tuple[Any, Any]], bootstrap: int, seed: int,
                      ids: Mapping[str, Sequence[int]] | None) -> PairStats:
    missing = [f for f in FACTORS if f not in pairs]
    if missing:
        raise ValueError(f"pairs must have keys {FACTORS}; missing {missing}")
    first = _as_float64(pairs["static"][0], "static z1")
    stats = PairStats(first.shape[1], bootstrap=bootstrap, seed=seed)
    for factor in FACTORS:
        z1, z2 = pairs[factor]
        factor_ids = None
        if bootstrap:
            factor_ids = ids[factor] if ids is not None else range(len(_as_float64(z1, factor)))
        stats.update(factor, z1, z2, ids=factor_ids)
    return stats


def layerwise(pairs: Mapping[str, tuple[Any, Any]], method: str = "normalized", *,
              bootstrap: int = 0, seed: int = 0,
              ids: Mapping[str, Sequence[int]] | None = None) -> LayerwiseResult:
    """Layer-wise static/dynamic result for ``{"static": (z1, z2), "dynamic": (z1, z2)}``.

    Each array is (N_F, C). ``bootstrap=R`` adds R Poisson-bootstrap replicates for intervals
    (pairs are resampled by video id; by default the row index, shared across factors).
    """
    return _stats_from_pairs(pairs, bootstrap, seed, ids).layerwise(method)


def unitwise(pairs: Mapping[str, tuple[Any, Any]], threshold: float = 0.5, *,
             bootstrap: int = 0, seed: int = 0,
             ids: Mapping[str, Sequence[int]] | None = None) -> UnitwiseResult:
    """Unit-wise static/dynamic scores and categories for the same ``pairs`` layout."""
    return _stats_from_pairs(pairs, bootstrap, seed, ids).unitwise(threshold)
