"""Procedurally generated action-recognition worlds that stand in for the paper's datasets.

Every world is a seeded generator whose static factors (object, scene) and dynamic factors
(how things move) are known latents, recorded per clip in ``World.meta``:

- ``ssv2``: motion primitives in opposite pairs; object and scene independent of the label.
- ``kinetics``: the same motions; scene and object correlate with the class (``cue_strength``).
- ``diving48``: a stick-figure diver goes through a class-specific sequence of poses.
- ``something_else``: ssv2 with, for each action, disjoint objects in train and val.

``make(name, split, n=...)`` renders a world (or reads it from the cache) and returns a
:class:`World`, a torch Dataset of ``(clip, label)`` pairs.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import torch

from .. import cache as _cache
from . import appearance, base, diving, motion, render  # noqa: I001  importing them registers their worlds, in this order
from .base import REGISTRY, SPLITS, World, WorldSpec, class_counts, register
from .motion import ACTIONS, PAIRS, something_else_objects

__all__ = [
    "ACTIONS", "PAIRS", "SPLITS", "World", "WorldSpec", "available", "cache_paths", "class_counts", "code_modules",
    "describe", "make", "register", "something_else_objects", "spec",
]

CACHE_FORMAT = 1  # bump when the layout of a cache entry changes


def available() -> list[str]:
    """Names of the registered worlds."""
    return list(REGISTRY)


def spec(name: str) -> WorldSpec:
    """The registered world called ``name``."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown world {name!r}; available worlds: {', '.join(available())}") from None


def describe(name: str) -> str:
    """What defines the label in world ``name`` and what a single frame reveals."""
    return spec(name).description


def _check_config(world: WorldSpec, split: str, n: int, frames: int, size: int, seed: int,
                  long_tail: float | None, options: dict[str, Any]) -> dict[str, Any]:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; splits: {', '.join(SPLITS)}")
    for label, value, least in (("n", n, 1), ("frames", frames, 2), ("size", size, 8), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise ValueError(f"{label} must be an integer >= {least}, got {value!r}")
    if long_tail is not None and not (isinstance(long_tail, (int, float)) and long_tail >= 0):
        raise ValueError(f"long_tail must be None (balanced) or a Zipf exponent >= 0, got {long_tail!r}")
    unknown = set(options) - set(world.options)
    if unknown:
        valid = ", ".join(world.options) or "none"
        raise ValueError(f"world {world.name!r} has no option(s) {sorted(unknown)}; its options: {valid}")
    return {
        "world": world.name, "split": split, "n": int(n), "frames": int(frames), "size": int(size),
        "seed": int(seed), "long_tail": None if long_tail is None else float(long_tail),
        "options": {**world.options, **options}, "format": CACHE_FORMAT,
    }


def code_modules(name: str) -> list[ModuleType]:
    """The modules whose source draws the clips of world ``name`` (what cache keys hash)."""
    return [base, render, appearance, spec(name).module]


def cache_paths(config: dict[str, Any]) -> tuple[Path, Path]:
    """The data file and JSON manifest of a world's cache entry (keyed by config and code)."""
    key = _cache.config_key(config, *code_modules(config["world"]))
    stem = f"{config['world']}-{config['split']}-n{config['n']}-{config['frames']}x{config['size']}-{key}"
    folder = _cache.cache_dir("worlds")
    return folder / f"{stem}.pt", folder / f"{stem}.json"


def _read_entry(data_path: Path, manifest_path: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """A cached payload, or None when the entry is missing, partial, corrupt or not this config."""
    if not _cache.is_intact(manifest_path):
        return None
    payload = _cache.load_config_entry(data_path, config)
    if payload is None:
        return None
    expected = (config["n"], 3, config["frames"], config["size"], config["size"])
    if tuple(payload["clips"].shape) != expected or payload["clips"].dtype != torch.uint8:
        return None
    return payload


def _write_entry(data_path: Path, manifest_path: Path, payload: dict[str, Any], seconds: float) -> None:
    _cache.save_tensors(data_path, payload)
    config = payload["config"]
    classes = spec(config["world"]).classes
    manifest = {
        "config": config,
        "n": config["n"],
        "checksum": _cache.file_checksum(data_path),
        "file": data_path.name,
        "bytes": data_path.stat().st_size,
        "clip_shape": list(payload["clips"].shape[1:]),
        "classes": list(classes),
        "class_counts": np.bincount(payload["labels"].numpy(), minlength=len(classes)).tolist(),
        "render_seconds": round(seconds, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    _cache.atomic_write(manifest_path, lambda tmp: tmp.write_text(json.dumps(manifest, indent=2)))


def _render(world: WorldSpec, config: dict[str, Any], progress: bool) -> tuple[dict[str, Any], float]:
    started = time.perf_counter()
    rng = base.split_rng(world.name, config["split"], config["seed"])
    generated = world.generate(rng, config["split"], config["n"], config["frames"], config["size"],
                               config["long_tail"], progress, **config["options"])
    payload = {
        "config": config,
        "clips": generated.clips,
        "labels": torch.as_tensor(generated.labels, dtype=torch.int64),
        "meta": generated.meta,
    }
    return payload, time.perf_counter() - started


def make(name: str, split: str, *, n: int, frames: int = 16, size: int = 32, seed: int = 0,
         long_tail: float | None = None, cache: bool = True, progress: bool = True, **options: Any) -> World:
    """Render (or read from the cache) ``n`` clips of world ``name`` for ``split``.

    ``split`` is "train" or "val" (their random streams are disjoint for every seed);
    ``long_tail`` is None for balanced classes or a Zipf exponent (class k gets a share
    proportional to ``(k + 1) ** -long_tail``); ``options`` are the world's own knobs
    (e.g. ``cue_strength`` for kinetics). With ``cache`` the uint8 clips are stored under
    ``stdyn.data.cache.cache_dir("worlds")``, keyed by the configuration and the generator's source,
    and a missing or corrupt entry is rendered again.
    """
    world = spec(name)
    config = _check_config(world, split, n, frames, size, seed, long_tail, options)
    payload, data_path = None, None
    if cache:
        data_path, manifest_path = cache_paths(config)
        payload = _read_entry(data_path, manifest_path, config)
    from_cache = payload is not None
    if payload is None:
        payload, seconds = _render(world, config, progress)
        if cache:
            _write_entry(data_path, manifest_path, payload, seconds)
    labels = payload["labels"]
    counts = np.bincount(labels.numpy(), minlength=len(world.classes))
    meta = pd.DataFrame({
        "label": labels.numpy(),
        "class_name": np.asarray(world.classes)[labels.numpy()],
        "class_count": counts[labels.numpy()],
        **payload["meta"],
    })
    meta.attrs.update(world=name, split=split, long_tail=config["long_tail"])
    return World(name, split, config, list(world.classes), payload["clips"], labels, meta,
                 description=world.description, cache_path=data_path, from_cache=from_cache)
