"""Action worlds of one moving object: ``ssv2``, ``kinetics`` and ``something_else``.

The labels are motion primitives in opposite pairs (labels ``2p`` and ``2p + 1``). A clip of the
second class of a pair is exactly a clip of the first class played backwards: both are drawn
from the same latents with start and end swapped, so the two classes of a pair have the same
distribution of frames up to order.
"""
from __future__ import annotations

import sys

import numpy as np
import torch

from . import render
from .base import (
    SPLITS,
    Generated,
    WorldSpec,
    as_tensor,
    draw_scenes,
    linear_path,
    register,
    render_chunks,
    sample_labels,
    sample_scenes,
)

ACTIONS: tuple[str, ...] = (
    "move_right", "move_left",
    "move_down", "move_up",
    "rotate_clockwise", "rotate_counterclockwise",
    "approach", "recede",
    "appear", "vanish",
)
PAIRS: tuple[tuple[str, str], ...] = tuple(zip(ACTIONS[::2], ACTIONS[1::2]))
MOVING: tuple[str, ...] = ("x", "y", "angle", "radius", "alpha")  # what each pair changes
ATTRIBUTES: tuple[str, ...] = ("x", "y", "radius", "angle", "alpha")  # render.draw_objects' order
N_OBJECTS = len(render.SHAPES) * render.N_HUES * len(render.TEXTURES)

# kinetics: each class's typical scene palette and object colour (fixed for the world).
HOME_PALETTE = np.random.default_rng(400).permutation(render.N_HUES)[: len(ACTIONS)]
HOME_COLOUR = np.random.default_rng(401).permutation(render.N_HUES)[: len(ACTIONS)]
OBJECT_SPLIT_SEED = 2018  # something_else: fixed per-class object split, whatever the seed


def object_attributes(object_id: np.ndarray) -> dict[str, np.ndarray]:
    """Shape, colour and texture indices of object ids (id = (shape * hues + colour) * textures + texture)."""
    textures, hues = len(render.TEXTURES), render.N_HUES
    return {
        "shape": object_id // (hues * textures),
        "colour": (object_id // textures) % hues,
        "texture": object_id % textures,
    }


def object_id(shape: np.ndarray, colour: np.ndarray, texture: np.ndarray) -> np.ndarray:
    """Inverse of :func:`object_attributes`."""
    return (shape * render.N_HUES + colour) * len(render.TEXTURES) + texture


def sample_motion(rng: np.random.Generator, labels: np.ndarray, frames: int, size: int) -> dict[str, np.ndarray]:
    """Start and end of position, size, angle and opacity per clip (pixels, radians).

    Each pair moves one attribute from start to end (its first class forwards, its second
    backwards); the others stay at their random start value. For rotations, (x, y) is the pivot
    and the object's centre sits ``orbit_radius`` from it in the direction of its angle.
    """
    n = len(labels)
    margin = 0.2 * size
    start = {
        "x": rng.uniform(margin, size - margin, n),
        "y": rng.uniform(margin, size - margin, n),
        "radius": rng.uniform(0.14, 0.2, n) * size,
        "angle": rng.uniform(0.0, 2 * np.pi, n),
        "alpha": np.ones(n),
    }
    distance = rng.uniform(0.35, 0.55, n) * size
    along = margin + rng.uniform(0.0, 1.0, n) * (size - 2 * margin - distance)
    small = rng.uniform(0.08, 0.1, n) * size
    # Rotations turn the object rigidly about a pivot beside it, so that it also travels along
    # an arc: a spin in place is hard to see for small objects at low resolution.
    orbit = rng.uniform(0.12, 0.22, n) * size
    pivot_x, pivot_y = rng.uniform(0.4, 0.6, (2, n)) * size
    forward_start = {"x": along, "y": along, "angle": start["angle"], "radius": small, "alpha": np.zeros(n)}
    forward_end = {
        "x": along + distance,
        "y": along + distance,
        "angle": start["angle"] + rng.uniform(0.8 * np.pi, 1.3 * np.pi, n),
        "radius": small * rng.uniform(2.2, 2.7, n),
        "alpha": np.ones(n),
    }
    pair = labels // 2
    rotates = pair == MOVING.index("angle")
    start["x"], start["y"] = np.where(rotates, pivot_x, start["x"]), np.where(rotates, pivot_y, start["y"])
    end = dict(start)
    for index, attribute in enumerate(MOVING):
        moves = pair == index
        start[attribute] = np.where(moves, forward_start[attribute], start[attribute])
        end[attribute] = np.where(moves, forward_end[attribute], end[attribute])
    backwards = labels % 2 == 1
    meta: dict[str, np.ndarray] = {"orbit_radius": np.where(rotates, orbit, 0.0)}
    for attribute in ATTRIBUTES:
        first, last = start[attribute], end[attribute]
        meta[f"{attribute}_start"] = np.where(backwards, last, first)
        meta[f"{attribute}_end"] = np.where(backwards, first, last)
    moving = np.asarray(MOVING)[pair]
    change = np.stack([meta[f"{a}_end"] - meta[f"{a}_start"] for a in MOVING])[pair, np.arange(n)]
    meta["moving"] = moving
    meta["speed"] = np.abs(change) / max(frames - 1, 1)  # pixels, radians or opacity per frame
    return meta


def motion_paths(meta: dict[str, np.ndarray], indices: np.ndarray, frames: int) -> list[torch.Tensor]:
    """Per-frame (B, T) centre x, centre y, radius, angle and opacity of the clips ``indices``:
    linear from start to end, plus the orbit of rotating objects about their pivot (x, y)."""
    x, y, radius, angle, alpha = (linear_path(meta[f"{a}_start"], meta[f"{a}_end"], indices, frames)
                                  for a in ATTRIBUTES)
    orbit = as_tensor(meta["orbit_radius"], indices)[:, None]
    return [x + orbit * angle.cos(), y + orbit * angle.sin(), radius, angle, alpha]


def _generate(rng: np.random.Generator, labels: np.ndarray, objects: np.ndarray, palettes: np.ndarray,
              frames: int, size: int, progress: bool, desc: str, **extra: np.ndarray) -> Generated:
    attributes = object_attributes(objects)
    meta = {
        "pair": np.asarray(["/".join(pair) for pair in PAIRS])[labels // 2],
        "object_id": objects,
        "shape": np.asarray(render.SHAPES)[attributes["shape"]],
        "colour": attributes["colour"],
        "texture": np.asarray(render.TEXTURES)[attributes["texture"]],
        **extra,
        **sample_scenes(rng, palettes),
        **sample_motion(rng, labels, frames, size),
    }

    def draw(indices: np.ndarray) -> torch.Tensor:
        clips, _ = render.draw_objects(
            draw_scenes(meta, indices, size),
            torch.as_tensor(attributes["shape"][indices]),
            torch.as_tensor(attributes["texture"][indices]),
            render.OBJECT_COLOURS[torch.as_tensor(attributes["colour"][indices])],
            *motion_paths(meta, indices, frames),
        )
        return clips

    return Generated(render_chunks(len(labels), frames, size, rng, draw, progress, desc), labels, meta)


def ssv2(rng: np.random.Generator, split: str, n: int, frames: int, size: int,
         long_tail: float | None, progress: bool) -> Generated:
    """Something-Something-v2 stand-in: one object on a scene moves in one of ten ways
    (right/left, down/up, clockwise/counter-clockwise, approach/recede, appear/vanish).

    Object (shape, colour, texture) and scene (palette, pattern) are drawn independently of the
    label. A single frame, or the whole set of frames without their order, says nothing about
    which class of an opposite pair a clip belongs to: the two are the same frames in reverse
    order. The set of frames does hint at the pair (e.g. a fading object belongs to
    appear/vanish), so order-free models can reach at most about one half.
    """
    labels = sample_labels(rng, n, len(ACTIONS), long_tail)
    objects = rng.integers(0, N_OBJECTS, n)
    palettes = rng.integers(0, render.N_HUES, n)
    return _generate(rng, labels, objects, palettes, frames, size, progress, f"ssv2/{split}")


def kinetics(rng: np.random.Generator, split: str, n: int, frames: int, size: int,
             long_tail: float | None, progress: bool, cue_strength: float = 0.6) -> Generated:
    """Kinetics-400 stand-in: the ten ssv2 motions, but scene and object correlate with the class.

    With probability ``cue_strength`` a clip is set in its class's typical scene palette and
    shows an object of its class's typical colour (recorded as ``cued`` in meta); otherwise both
    are random. A single frame therefore reveals the class in about ``cue_strength`` of the
    clips (plus chance on the rest): informative but not sufficient, so a model gains from both
    the static cue and the motion.
    """
    if not 0.0 <= cue_strength <= 1.0:
        raise ValueError(f"cue_strength must be in [0, 1] (the probability of a class-typical scene), got {cue_strength}")
    labels = sample_labels(rng, n, len(ACTIONS), long_tail)
    cued = rng.random(n) < cue_strength
    shape = rng.integers(0, len(render.SHAPES), n)
    texture = rng.integers(0, len(render.TEXTURES), n)
    colour = np.where(cued, HOME_COLOUR[labels], rng.integers(0, render.N_HUES, n))
    palettes = np.where(cued, HOME_PALETTE[labels], rng.integers(0, render.N_HUES, n))
    objects = object_id(shape, colour, texture)
    return _generate(rng, labels, objects, palettes, frames, size, progress, f"kinetics/{split}", cued=cued)


def something_else_objects(split: str) -> dict[str, np.ndarray]:
    """The object ids each action may show in ``split`` of ``something_else``; for every action
    the train and val objects are disjoint halves of all objects."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; splits: {', '.join(SPLITS)}")
    half = N_OBJECTS // 2
    groups = {}
    for label, action in enumerate(ACTIONS):
        order = np.random.default_rng([OBJECT_SPLIT_SEED, label]).permutation(N_OBJECTS)
        groups[action] = np.sort(order[:half] if split == "train" else order[half:])
    return groups


def something_else(rng: np.random.Generator, split: str, n: int, frames: int, size: int,
                   long_tail: float | None, progress: bool) -> Generated:
    """SomethingElse (compositional split) stand-in: the ssv2 world, but for each action the
    objects seen in train and in val are disjoint halves of the object catalogue.

    As in ssv2 a single frame says nothing about which class of an opposite pair a clip
    belongs to; in addition, an object's identity, which in train co-occurs with only some
    actions, is a misleading cue in val.
    """
    labels = sample_labels(rng, n, len(ACTIONS), long_tail)
    allowed = np.stack(list(something_else_objects(split).values()))  # (actions, objects)
    objects = allowed[labels, rng.integers(0, allowed.shape[1], n)]
    palettes = rng.integers(0, render.N_HUES, n)
    return _generate(rng, labels, objects, palettes, frames, size, progress, f"something_else/{split}")


register(WorldSpec("ssv2", ACTIONS, ssv2, sys.modules[__name__]))
register(WorldSpec("kinetics", ACTIONS, kinetics, sys.modules[__name__]))
register(WorldSpec("something_else", ACTIONS, something_else, sys.modules[__name__]))
