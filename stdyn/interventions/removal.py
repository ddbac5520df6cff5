"""Removing units at inference (paper Sec. 5.1, Fig. 11).

Zero the channels of one layer that a measurement ranks as most static or most dynamic, and compare
the accuracy drop with removing random channels::

    result = measurement.unitwise("head.pool")
    rankings = {"static": rank_units(result, "static"), "dynamic": rank_units(result, "dynamic"),
                "random": random_units(n_channels, n_channels, draws=5, seed=0)}
    curve = removal_curve(model, val_set, "head.pool", rankings, ks=[0, 8, 16, 32])
"""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from stdyn import training
from stdyn.core.estimator import FACTORS, UnitwiseResult
from stdyn.core.probe import DEFAULT_LAYOUT, POOL_DIMS, _layouts_from_stages, check_layers

RANK_BY = ("score", "margin")



def _channel_dim(layout: str) -> int:
    return layout.index("C")


def _stage_channels(model: nn.Module, layer: str) -> int | None:
    return next((s.channels for s in getattr(model, "stages", []) if s.name == layer), None)


def _check_channels(channels: Sequence[int], n_channels: int | None, layer: str) -> list[int]:
    """The channel indices as sorted unique ints, or an error naming the layer's channel count."""
    array = np.asarray(list(channels))
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"channels of layer {layer!r} must be integer indices, got {array.dtype}")
    indices = sorted({int(c) for c in array.ravel()})
    low = indices[0] if indices else 0
    high = indices[-1] if indices else -1
    if low < 0 or (n_channels is not None and high >= n_channels):
        limit = f"[0, {n_channels})" if n_channels is not None else "[0, C)"
        bad = low if low < 0 else high
        size = f"has {n_channels} channels; " if n_channels is not None else ""
        raise IndexError(f"layer {layer!r} {size}channel indices must lie in {limit}, got {bad}")
    return indices


@contextlib.contextmanager
def remove_units(model: nn.Module, layer: str, channels: Sequence[int], *,
                 layout: str | None = None) -> Iterator[nn.Module]:
    """Zero ``channels`` of ``layer``'s output while the context is open; restore the model after.

    The channel dimension follows the probe's layouts: dim 1 for (B, C, ...) outputs, the last dim
    for tokens (B, N, C) (or pass ``layout``, one of ``stdyn.core.probe.POOL_DIMS``). The forward hook
    is removed on exit, also when the body raises.
    """
    (layer,) = check_layers(model, [layer])
    layout = layout or _layouts_from_stages(model).get(layer)
    if layout is not None and layout not in POOL_DIMS:
        raise ValueError(f"unknown layout {layout!r} for layer {layer!r}; use one of {sorted(POOL_DIMS)}")
    indices = _check_channels(channels, _stage_channels(model, layer), layer)

    def zero_channels(module: nn.Module, inputs: Any, output: Any) -> Any:
        if isinstance(output, (tuple, list)):  # e.g. blocks returning (tokens, shape): edit the tensor
            position = next((i for i, o in enumerate(output) if isinstance(o, Tensor)), None)
            if position is None:
                raise TypeError(f"layer {layer!r} returned no tensor; remove units of another layer")
            edited = list(output)
            edited[position] = zero_channels(module, inputs, output[position])
            return type(output)(edited)
        if not isinstance(output, Tensor):
            raise TypeError(f"layer {layer!r} returned {type(output).__name__}, not a tensor")
        dim = _channel_dim(layout or DEFAULT_LAYOUT.get(output.ndim, "BC" + "X" * (output.ndim - 2)))
        _check_channels(indices, output.shape[dim], layer)
        if not indices:
            return output
        return output.index_fill(dim, torch.tensor(indices, device=output.device), 0)

    handle = model.get_submodule(layer).register_forward_hook(zero_channels)
    try:
        yield model
    finally:
        handle.remove()


def rank_units(unitwise_result: UnitwiseResult, factor: str, *, by: str = "score") -> np.ndarray:
    """Channel indices from most to least biased toward ``factor``; dead channels last.

    ``by="score"`` orders by ``s_factor``; ``by="margin"`` by ``s_factor - s_other`` (units that
    encode ``factor`` and not the other one first). Ties keep channel order.
    """
    if factor not in FACTORS:
        raise ValueError(f"unknown factor {factor!r}; expected one of {FACTORS}")
    if by not in RANK_BY:
        raise ValueError(f"unknown ranking {by!r}; expected one of {RANK_BY}")
    key = np.asarray(unitwise_result.scores[factor], dtype=np.float64)
    if by == "margin":
        other = next(f for f in FACTORS if f != factor)
        key = key - np.asarray(unitwise_result.scores[other], dtype=np.float64)
    dead = np.isnan(key) | (np.asarray(unitwise_result.categories) == "dead")
    return np.argsort(-np.where(dead, -np.inf, key), kind="stable")


def random_units(n_channels: int, k: int, *, draws: int, seed: int) -> list[np.ndarray]:
    """``draws`` random sets of ``k`` channels (the baseline of Fig. 11), each from ``(seed, draw)``.

    Each draw is the first ``k`` entries of a seeded permutation, so ``k = n_channels`` gives full
    random rankings whose prefixes are the random sets of every smaller size.
    """
    if not 0 <= k <= n_channels:
        raise ValueError(f"k must lie in [0, n_channels={n_channels}], got {k}")
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    return [np.random.default_rng([seed, draw]).permutation(n_channels)[:k] for draw in range(draws)]


def least_biased_units(unitwise_result: UnitwiseResult, factor: str, ks: Sequence[int], *, draws: int, seed: int,
                       extra: float = 0.05) -> dict[int, list[np.ndarray]]:
    """The random baseline of the paper's AVOS removal (Sec. 5.1): for each ``k``, ``draws`` sets
    of ``k`` channels drawn without replacement from the ``k + round(extra * n)`` channels least
    biased toward ``factor`` (the layer's dominant factor), each set from ``(seed, k, draw)``.

    Drawing among the least biased units keeps a random set from hitting, by chance, the few
    units an intermediate layer cannot do without. Dead channels count as the most biased here,
    so that the pool holds live units first.
    """
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    if not 0 <= extra <= 1:
        raise ValueError(f"extra must be a fraction of the channels in [0, 1], got {extra}")
    ranking = rank_units(unitwise_result, factor)  # most biased first, dead channels last
    dead = np.isnan(np.asarray(unitwise_result.scores[factor], dtype=np.float64))
    ascending = np.concatenate([[c for c in ranking[::-1] if not dead[c]], [c for c in ranking if dead[c]]])
    n = len(ascending)
    sets = {}
    for k in ks:
        k = int(k)
        if not 0 <= k <= n:
            raise ValueError(f"k must lie in [0, n_channels={n}], got {k}")
        pool = ascending[: min(n, k + int(round(extra * n)))].astype(np.int64)
        sets[k] = [np.random.default_rng([seed, k, draw]).choice(pool, size=k, replace=False) for draw in range(draws)]
    return sets


def top_k_sets(ranking: np.ndarray | Sequence[np.ndarray], ks: Sequence[int]) -> dict[int, list[np.ndarray]]:
    """The first ``k`` channels of one ranking (or of each of several), for every ``k``."""
    orders = _draws(ranking)
    sets = {}
    for k in ks:
        if not all(0 <= k <= len(order) for order in orders):
            raise ValueError(f"k={k} is out of range for a ranking of {len(orders[0])} channels")
        sets[int(k)] = [order[: int(k)] for order in orders]
    return sets


def removal_runs(model: nn.Module, dataset: torch.utils.data.Dataset, layer: str,
                 sets: Mapping[str, Mapping[int, Sequence[np.ndarray]]],
                 score: Callable[[nn.Module, torch.utils.data.Dataset], Any], *, progress: bool = True) -> pd.DataFrame:
    """``score(model, dataset)`` with each set of channels of ``layer`` removed: a frame with
    columns kind, k, draw and score. ``sets`` maps a kind to ``{k: [channels of each draw]}``
    (:func:`top_k_sets`, :func:`least_biased_units`); a set removed twice (e.g. k = 0) is scored once."""
    check_layers(model, [layer])
    runs = [(kind, int(k), draw, channels) for kind, by_k in sets.items() for k, draws in by_k.items()
            for draw, channels in enumerate(draws)]
    score_of: dict[tuple[int, ...], Any] = {}
    scored = []
    for kind, k, draw, channels in tqdm(runs, desc=f"removing units of {layer}", disable=not progress):
        removed = tuple(sorted(int(c) for c in channels))
        if removed not in score_of:
            with remove_units(model, layer, removed):
                score_of[removed] = score(model, dataset)
        scored.append((kind, k, draw, score_of[removed]))
    return pd.DataFrame(scored, columns=["kind", "k", "draw", "score"])


def _removal_runs(model: nn.Module, dataset: torch.utils.data.Dataset, layer: str,
                  rankings: Mapping[str, np.ndarray | Sequence[np.ndarray]], ks: Sequence[int],
                  score: Callable[[nn.Module, torch.utils.data.Dataset], Any],
                  progress: bool) -> pd.DataFrame:
    """:func:`removal_runs` of the top-k units of each ranking."""
    sets = {}
    for kind, ranking in rankings.items():
        try:
            sets[kind] = top_k_sets(ranking, ks)
        except ValueError as error:
            raise ValueError(f"{error} ({kind!r} ranking)") from None
    return removal_runs(model, dataset, layer, sets, score, progress=progress)


def removal_curve(
    model: nn.Module,
    dataset: torch.utils.data.Dataset,
    layer: str,
    rankings: Mapping[str, np.ndarray | Sequence[np.ndarray]],
    ks: Sequence[int],
    *,
    evaluate: Callable[[nn.Module, torch.utils.data.Dataset], float] | None = None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> pd.DataFrame:
    """Top-1 accuracy with the top-k units of each ranking removed from ``layer`` (Fig. 11).

    ``rankings`` maps a kind (e.g. "static", "dynamic", "random") to one ranking (channel
    indices, most important first) or to several (random draws). Returns a tidy frame with
    columns kind, k, draw, accuracy. ``evaluate(model, dataset) -> accuracy`` defaults to
    :func:`stdyn.training.evaluate`. Removing the same set twice (e.g. k = 0) is evaluated once.
    """
    evaluate = evaluate or functools.partial(training.evaluate, batch_size=batch_size, device=device)
    runs = _removal_runs(model, dataset, layer, rankings, ks, lambda m, d: float(evaluate(m, d)), progress)
    return runs.rename(columns={"score": "accuracy"})


def removal_correct(
    model: nn.Module,
    dataset: torch.utils.data.Dataset,
    layer: str,
    rankings: Mapping[str, np.ndarray | Sequence[np.ndarray]],
    ks: Sequence[int],
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> pd.DataFrame:
    """:func:`removal_curve` clip by clip: columns kind, k, draw, correct (a boolean array (N,)
    per run, in dataset order) and accuracy, for bootstrap intervals over clips."""

    def correct(model: nn.Module, dataset: torch.utils.data.Dataset) -> np.ndarray:
        logits, labels = training.predict(model, dataset, batch_size=batch_size, device=device)
        return (logits.argmax(1) == labels).numpy()

    frame = _removal_runs(model, dataset, layer, rankings, ks, correct, progress).rename(columns={"score": "correct"})
    frame["accuracy"] = [float(c.mean()) for c in frame["correct"]]
    return frame


def _draws(ranking: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    """One ranking (a sequence of channel indices) or several, as a list of integer arrays."""
    if len(ranking) and np.ndim(ranking[0]) > 0:
        return [np.asarray(order, dtype=np.int64) for order in ranking]
    return [np.asarray(ranking, dtype=np.int64)]
