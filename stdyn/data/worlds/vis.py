"""Video instance segmentation (VIS) worlds: ``ytvis`` and ``ovis``.

Each clip shows a few instances moving over a textured scene; the labels are, for every
instance, its class and its visible mask in every frame. An instance's class is its shape
(:data:`VIS_CLASSES`); its look (colours, texture) is drawn at random, independently of the
class, as far from the scene in luma as the VOS worlds' objects, so the class is read from
the outline, never from the colour. Each instance moves on its own path (linear in position,
with a little spin and scale change, as the VOS foreground) and keeps its identity, class and
look in every frame.

Instances are stacked in depth (``inst{k}_layer``, 0 at the back) and drawn back to front: an
instance's visible mask is where it covers at least half a pixel and no instance in front of it
does, so the masks of a frame are disjoint, and an instance may be wholly hidden in some frames.
The worlds differ in how often that happens (:data:`VIS_SETTINGS`, :func:`occlusion_stats`):

- ``ytvis``: one to three instances, each clip's layout the one with the most room between
  its instances out of several drawn, so paths rarely cross;
- ``ovis``: three to five instances on paths through a shared central region, which they pass
  at different times: heavy, changing mutual occlusion.

Items carry :data:`MAX_INSTANCES` slots whatever the world, so that the worlds' items collate
together: slot ``k < instances`` holds instance ``k``, the rest have class -1 and empty masks.
``make(name, split, n)`` renders a :class:`VisWorld`.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .. import cache as _cache
from . import appearance, base, render, vos
from .base import linear_path, render_chunks, single_thread, split_rng
from .vos import Pose

VIS_CLASSES: tuple[str, ...] = ("ellipse", "triangle", "half_disc", "l_shape")
MAX_INSTANCES = 6
CACHE_FORMAT = 1


@dataclass(frozen=True)
class VisSettings:
    """What defines a VIS world. Lengths are fractions of the frame size, speeds fractions of the
    frame size per frame. The path fields are those :func:`vos._sample_paths` reads."""

    description: str
    frames: int  # default clip length
    instances: tuple[int, int]  # fewest and most instances per clip
    position_spread: float | None  # std of a path's crossing point about the centre; None: uniform
    radius: tuple[float, float]
    speed: tuple[float, float]
    spin: float  # largest turn per frame (radians)
    scale_change: tuple[float, float]  # last radius / first radius
    crossing_time: tuple[float, float] = (0.5, 0.5)  # when (share of the clip) a path passes its crossing point
    layouts: int = 1  # layouts drawn per clip; the one with the most room between its instances is kept
    shapes: tuple[str, ...] = VIS_CLASSES
    camera_rate: float = 0.0
    camera_speed: tuple[float, float] = (0.005, 0.015)


VIS_SETTINGS: dict[str, VisSettings] = {
    "ytvis": VisSettings(
        "YouTube-VIS stand-in: one to three instances per clip, placed apart on paths that rarely "
        "cross, so instances seldom hide one another. Each instance's class is its shape, its "
        "colours and texture are random. A single frame shows every instance in nearly all clips.",
        frames=8, instances=(1, 3), position_spread=None, radius=(0.15, 0.22), speed=(0.01, 0.04), spin=0.06,
        scale_change=(0.9, 1.1), layouts=8, camera_rate=0.2,
    ),
    "ovis": VisSettings(
        "OVIS stand-in: three to five instances per clip on paths through a shared central region, "
        "which they pass at different times, stacked in depth: instances hide one another often, "
        "in part or wholly for some frames. A single frame may miss instances the clip shows.",
        frames=8, instances=(3, 5), position_spread=0.1, radius=(0.14, 0.21), speed=(0.015, 0.045), spin=0.06,
        scale_change=(0.9, 1.1), crossing_time=(0.15, 0.85), camera_rate=0.2,
    ),
}
VIS_WORLDS: dict[str, str] = {name: settings.description for name, settings in VIS_SETTINGS.items()}
_PATH_KEYS = ("x_start", "x_end", "y_start", "y_end", "radius_start", "radius_end", "angle_start", "angle_end",
              "travel")


# ---------------------------------------------------------------------------------------------
# Latents


def _check(name: str, split: str, n: int, frames: int | None, size: int, seed: int) -> VisSettings:
    if name not in VIS_SETTINGS:
        raise ValueError(f"unknown VIS world {name!r}; available VIS worlds: {', '.join(VIS_SETTINGS)}")
    # split, n, frames, size and seed obey the VOS worlds' rules (checked there with any VOS world's name)
    vos._check(next(iter(vos.VOS_SETTINGS)), split, n, frames, size, seed, vos.FLOWS[0])
    return VIS_SETTINGS[name]


def _clearance(paths: dict[str, np.ndarray], present: np.ndarray, frames: int) -> np.ndarray:
    """The least gap (pixels) between the bounding circles of two present instances over the clip,
    per layout: paths are (..., K) arrays, ``present`` (..., K); ``inf`` with fewer than two."""
    time_ = np.linspace(0.0, 1.0, frames)

    def track(axis: str) -> np.ndarray:  # (..., K, T)
        start, end = paths[f"{axis}_start"][..., None], paths[f"{axis}_end"][..., None]
        return start + (end - start) * time_

    x, y = track("x"), track("y")
    reach = np.maximum(paths["radius_start"], paths["radius_end"])
    least = np.full(present.shape[:-1], np.inf)
    slots = present.shape[-1]
    for i in range(slots):  # a loop over pairs keeps the memory small for many clips
        for j in range(i + 1, slots):
            distance = np.hypot(x[..., i, :] - x[..., j, :], y[..., i, :] - y[..., j, :]).min(-1)
            gap = np.where(present[..., i] & present[..., j], distance - reach[..., i] - reach[..., j], np.inf)
            least = np.minimum(least, gap)
    return least


def _sample_layout(rng: np.random.Generator, s: VisSettings, present: np.ndarray, frames: int,
                   size: int) -> dict[str, np.ndarray]:
    """Every slot's path (n, K): drawn as the VOS foreground's, moved along itself so that it
    passes its midpoint at its crossing time, and, with ``layouts > 1``, the layout with the most
    room between the clip's instances."""
    n, slots = present.shape
    shape = (n, s.layouts, slots)
    drawn = vos._sample_paths(rng, s, math.prod(shape), frames, size)
    paths = {key: values.reshape(shape) for key, values in drawn.items()}
    crossing = rng.uniform(*s.crossing_time, shape)
    margin = np.maximum(paths["radius_start"], paths["radius_end"]) + 1.0  # as vos: the object stays inside
    for axis in ("x", "y"):
        start, end = paths[f"{axis}_start"], paths[f"{axis}_end"]
        shift = (end - start) * (0.5 - crossing)
        paths[f"{axis}_start"] = np.clip(start + shift, margin, size - margin)
        paths[f"{axis}_end"] = np.clip(end + shift, margin, size - margin)
    paths["travel"] = np.hypot(paths["x_end"] - paths["x_start"], paths["y_end"] - paths["y_start"])
    best = np.zeros(n, dtype=np.int64)
    if s.layouts > 1:
        best = _clearance(paths, present[:, None, :], frames).argmax(1)
    rows = np.arange(n)
    chosen = {key: values[rows, best] for key, values in paths.items()}
    chosen["crossing"] = crossing[rows, best]
    return chosen


def sample_latents(rng: np.random.Generator, name: str, n: int, frames: int, size: int) -> dict[str, np.ndarray]:
    """Every latent of ``n`` clips of world ``name``, one row per clip: the scene's look (that of
    :func:`appearance.sample`, less its single object), the camera, the instance count and, per
    slot ``k`` up to the world's most instances, ``inst{k}_...``: presence, shape and class
    (-1 when absent), depth layer (0 at the back, -1 when absent), path and look."""
    s = VIS_SETTINGS[name]
    scene = {key: values for key, values in appearance.sample(rng, n).items()
             if not key.startswith("object") and key != "texture_frequency"}  # each instance has its own look
    count = rng.integers(s.instances[0], s.instances[1] + 1, n)
    slots = s.instances[1]
    present = np.arange(slots) < count[:, None]
    depth_keys = np.where(present, rng.random((n, slots)), np.inf)
    layer = np.where(present, depth_keys.argsort(1).argsort(1), -1)  # a random order of the present ones
    paths = _sample_layout(rng, s, present, frames, size)
    meta: dict[str, np.ndarray] = {**scene, **vos._sample_camera(rng, s, n, frames, size), "instances": count}
    for k in range(slots):
        prefix = f"inst{k}"
        shape = paths["shape"][:, k]
        meta[f"{prefix}_present"] = present[:, k]
        meta[f"{prefix}_shape"] = shape
        meta[f"{prefix}_class"] = np.where(present[:, k], [VIS_CLASSES.index(label) for label in shape], -1)
        meta[f"{prefix}_layer"] = layer[:, k]
        for key in (*_PATH_KEYS, "crossing"):
            meta[f"{prefix}_{key}"] = paths[key][:, k]
        luma = appearance._away_from(rng, scene["scene_luma"], (appearance.MIN_OBJECT_GAP, 0.65))
        meta[f"{prefix}_luma"] = luma
        meta.update(vos._object_look(rng, luma, scene["scene_luma"], prefix))
    return meta


# ---------------------------------------------------------------------------------------------
# Drawing


def scene_padding(name: str, frames: int, size: int) -> int:
    """Pixels of scene beyond each side of the frame: enough for the world's largest pan, the
    same for every clip (as :func:`vos.scene_padding`)."""
    s = VIS_SETTINGS[name]
    pan = s.camera_speed[1] * size * (frames - 1) if s.camera_rate > 0 else 0.0
    return math.ceil(pan) + 2


def _slots(meta: dict[str, np.ndarray]) -> int:
    """Instance slots in a world's latents (its most instances per clip)."""
    return sum(f"inst{k}_present" in meta for k in range(MAX_INSTANCES))


def instance_pose(meta: dict[str, np.ndarray], k: int, indices: np.ndarray, frames: int) -> Pose:
    """Instance ``k``'s per-frame pose in the image."""
    return Pose(*(linear_path(meta[f"inst{k}_{a}_start"], meta[f"inst{k}_{a}_end"], indices, frames)
                  for a in ("x", "y", "radius", "angle")))


def _draw_instances(meta: dict[str, np.ndarray], indices: np.ndarray, frames: int,
                    size: int) -> tuple[Tensor, Tensor]:
    """Every slot's premultiplied colour layer (B, K, 3, T, S, S) and coverage (B, K, T, S, S),
    K the world's slots; zeros where a slot is empty."""
    batch, slots = len(indices), _slots(meta)
    layers = torch.zeros(batch, slots, 3, frames, size, size)
    covers = torch.zeros(batch, slots, frames, size, size)
    for k in range(slots):
        present = torch.as_tensor(meta[f"inst{k}_present"][indices])
        if present.any():
            layers[:, k], covers[:, k] = vos._draw(
                instance_pose(meta, k, indices, frames), vos._shape_indices_of(meta[f"inst{k}_shape"][indices]),
                vos._as_object(meta, f"inst{k}"), indices, size, present[:, None].float().expand(-1, frames))
    return layers, covers


def _visible(full: Tensor, layer: Tensor) -> Tensor:
    """Visible masks (B, K, T, S, S) from full binary masks (B, K, T, S, S) and depth layers
    (B, K): where an instance is and no instance in front of it is."""
    in_front = (layer[:, None, :] > layer[:, :, None]).float()  # [b, k, j]: j is in front of k
    covered = torch.bmm(in_front, full.flatten(2).float()) > 0
    return full & ~covered.view_as(full)


def draw_clips(meta: dict[str, np.ndarray], indices: np.ndarray, frames: int, size: int,
               pad: int) -> tuple[Tensor, Tensor]:
    """Clips (B, 3, T, S, S) in [0, 1] before sensor noise and the instances' visible masks
    (B, K, T, S, S), K the world's slots: the scene (panned by the camera), then the instances
    back to front."""
    batch = len(indices)
    camera = vos.camera_path(meta, indices, frames)
    canvas = appearance.scene(meta, indices, size + 2 * pad)
    grid_x, grid_y = (c.flatten() for c in render.pixel_grid(size))
    clips = vos._sample_canvas(canvas, grid_x + pad + camera[0][..., None], grid_y + pad + camera[1][..., None])
    clips = clips.view(batch, 3, frames, size, size)
    layers, covers = _draw_instances(meta, indices, frames, size)
    layer = torch.as_tensor(np.stack([meta[f"inst{k}_layer"][indices] for k in range(_slots(meta))], 1))
    rows = torch.arange(batch)
    for slot in layer.argsort(1).T:  # back to front; empty slots (layer -1) first, and they draw nothing
        vos._over(clips, layers[rows, slot], covers[rows, slot])
    return appearance.finish(clips, meta, indices), _visible(covers >= 0.5, layer)


def _classes(meta: dict[str, np.ndarray]) -> Tensor:
    """Every clip's classes (N, MAX_INSTANCES), -1 for empty slots."""
    n = len(meta["instances"])
    classes = torch.full((n, MAX_INSTANCES), -1, dtype=torch.int64)
    for k in range(_slots(meta)):
        classes[:, k] = torch.as_tensor(meta[f"inst{k}_class"])
    return classes


# ---------------------------------------------------------------------------------------------
# The dataset


class VisWorld(Dataset):
    """A rendered VIS world: item ``i`` is a dict of ``clip`` (3, T, S, S) float in [0, 1],
    ``masks`` (MAX_INSTANCES, T, S, S) float {0, 1}, each instance's visible mask, and
    ``classes`` (MAX_INSTANCES,) int64, indices into :data:`VIS_CLASSES` (-1: empty slot).

    Clips and masks are held as uint8.
    """

    def __init__(self, name: str, split: str, config: dict[str, Any], data: Tensor, masks: Tensor, classes: Tensor,
                 meta: pd.DataFrame, cache_path: Path | None = None, from_cache: bool = False) -> None:
        self.name, self.split, self.config = name, split, config
        self.data, self.masks, self.classes, self.meta = data, masks, classes, meta
        self.description = VIS_WORLDS[name]
        self.cache_path, self.from_cache = cache_path, from_cache

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {"clip": self.data[index].float().div_(255.0), "masks": self.masks[index].float(),
                "classes": self.classes[index]}

    def clips(self, index: slice | Tensor | list[int] = slice(None)) -> Tensor:
        """A batch (B, 3, T, S, S) of float clips in [0, 1] (all clips by default)."""
        return self.data[index].float().div_(255.0)

    def full_masks(self, indices: np.ndarray | list[int] | None = None) -> Tensor:
        """Each instance's whole mask (B, MAX_INSTANCES, T, S, S) bool, hidden parts included,
        drawn again from the latents (all clips by default)."""
        rows = np.arange(len(self)) if indices is None else np.asarray(indices)
        meta = {column: self.meta[column].to_numpy() for column in self.meta.columns}
        _, _, frames, size, _ = self.data.shape
        out = torch.zeros((len(rows), MAX_INSTANCES, frames, size, size), dtype=torch.bool)
        step = base.chunk_size(frames, size)  # rendering's chunks
        with single_thread():
            for start in range(0, len(rows), step):
                _, covers = _draw_instances(meta, rows[start:start + step], frames, size)
                out[start:start + step, :covers.shape[1]] = covers >= 0.5
        return out

    def __repr__(self) -> str:
        _, _, frames, size, _ = self.data.shape
        fewest, most = VIS_SETTINGS[self.name].instances
        return (f"VisWorld({self.name!r}, split={self.split!r}, n={len(self)}, frames={frames}, size={size}, "
                f"instances={fewest}-{most})")


def occlusion_stats(world: VisWorld) -> pd.DataFrame:
    """One row per clip: ``instances``; ``occlusion``, the mean over its instances and frames of the
    share of an instance's whole mask hidden by instances in front; ``crossings``, the pairs of
    instances whose whole masks overlap in some frame; ``hidden``, the share of instance-frames
    with an empty visible mask."""
    _, _, frames, size, _ = world.data.shape
    step = base.chunk_size(frames, size) * max(1, 256 // base.chunk_size(frames, size))
    parts = []
    for start in range(0, len(world), step):  # whole masks of a few clips at a time: they are large
        rows = np.arange(start, min(start + step, len(world)))
        parts.append(_occlusion(world.full_masks(rows), world.masks[rows].bool(), world.classes[rows] >= 0))
    return pd.concat(parts, ignore_index=True)


def _occlusion(full: Tensor, visible: Tensor, present: Tensor) -> pd.DataFrame:
    """:func:`occlusion_stats` of clips with whole and visible masks (B, K, T, S, S) and present slots (B, K)."""
    area, seen = full.sum((3, 4)).double(), visible.sum((3, 4)).double()  # (B, K, T)
    present_frames = present[:, :, None].expand_as(area)
    counted = present_frames & (area > 0)
    occlusion = torch.where(counted, 1.0 - seen / area.clamp(min=1), torch.zeros(()))
    flat = full.flatten(2).float()
    overlap = torch.bmm(flat, flat.transpose(1, 2)) > 0  # (B, K, K): some pixel of some frame shared
    pairs = overlap & present[:, :, None] & present[:, None, :]
    return pd.DataFrame({
        "instances": present.sum(1).numpy(),
        "occlusion": (occlusion.sum((1, 2)) / counted.sum((1, 2)).clamp(min=1)).numpy(),
        "crossings": pairs.triu(diagonal=1).sum((1, 2)).numpy(),
        "hidden": ((present_frames & (seen == 0)).sum((1, 2)) / present_frames.sum((1, 2)).clamp(min=1)).numpy(),
    })


def annotated_frames(frames: int, every: int = 1) -> Tensor:
    """Which of a clip's ``frames`` have masks (frames,) bool when a dataset annotates every
    ``every``-th frame from the first (YouTube-VIS and OVIS: every 5th)."""
    for label, value in (("frames", frames), ("every", every)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{label} must be an integer >= 1, got {value!r}")
    return torch.arange(frames) % every == 0


def _render(config: dict[str, Any], progress: bool) -> dict[str, Any]:
    name, split, n, frames, size = (config[k] for k in ("world", "split", "n", "frames", "size"))
    rng = split_rng(f"vis/{name}", split, config["seed"])
    meta = sample_latents(rng, name, n, frames, size)
    pad = scene_padding(name, frames, size)
    masks = torch.zeros((n, MAX_INSTANCES, frames, size, size), dtype=torch.uint8)

    def draw(indices: np.ndarray) -> Tensor:
        clips, visible = draw_clips(meta, indices, frames, size, pad)
        masks[torch.as_tensor(indices), :visible.shape[1]] = visible.to(torch.uint8)
        return clips

    data = render_chunks(n, frames, size, rng, draw, meta["noise"], progress, f"{name}/{split}")
    return {"config": config, "clips": data, "masks": masks, "classes": _classes(meta), "meta": meta}


def cache_path(config: dict[str, Any]) -> Path:
    """Where a world's cache entry lives (keyed by its configuration and the code that draws it)."""
    key = _cache.config_key(config, base, render, appearance, vos, sys.modules[__name__])
    stem = f"vis-{config['world']}-{config['split']}-n{config['n']}-{config['frames']}x{config['size']}-{key}"
    return _cache.cache_dir("worlds") / f"{stem}.pt"


def make(name: str, split: str, n: int, frames: int | None = None, size: int = 32, seed: int = 0,
         cache: bool = True, progress: bool = False) -> VisWorld:
    """Render (or read from the cache) ``n`` clips of VIS world ``name`` for ``split``.

    ``frames`` defaults to the world's clip length (8). The same arguments give identical
    tensors; train and val draw from disjoint random streams. With ``cache`` the rendered world
    is stored under ``stdyn.data.cache.cache_dir("worlds")``, keyed by the configuration and the
    source of the code that draws it.
    """
    settings = _check(name, split, n, frames, size, seed)
    config = {"world": name, "split": split, "n": int(n), "frames": int(frames or settings.frames),
              "size": int(size), "seed": int(seed), "format": CACHE_FORMAT}
    path = cache_path(config) if cache else None
    payload = _cache.load_config_entry(path, config) if path is not None else None
    from_cache = payload is not None
    if payload is None:
        started = time.perf_counter()
        payload = _render(config, progress)
        payload["render_seconds"] = time.perf_counter() - started
        if path is not None:
            _cache.save_tensors(path, payload)
    meta = pd.DataFrame(payload["meta"])
    meta.attrs.update(world=name, split=split)
    return VisWorld(name, split, config, payload["clips"], payload["masks"], payload["classes"], meta,
                    cache_path=path, from_cache=from_cache)
