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
from torch import Tensor

from . import appearance, render
from .base import SPLITS, Generated, WorldSpec, as_tensor, linear_path, register, render_chunks, sample_labels

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
HUE_BINS = 10  # an object's identity: its shape, its hue (in one of ten bins) and its texture
N_OBJECTS = len(render.SHAPES) * HUE_BINS * len(appearance.OBJECT_TEXTURES)

# kinetics: each class's typical scene layout (fixed for the world).
HOME_LAYOUT = np.random.default_rng(400).permutation(len(appearance.LAYOUTS))[: len(ACTIONS)]
OBJECT_SPLIT_SEED = 2018  # something_else: fixed per-class object split, whatever the seed


def object_attributes(object_id: np.ndarray) -> dict[str, np.ndarray]:
    """Shape, hue-bin and texture indices of object ids (id = (shape * hues + hue) * textures + texture)."""
    textures, hues = len(appearance.OBJECT_TEXTURES), HUE_BINS
    return {
        "shape": object_id // (hues * textures),
        "colour": (object_id // textures) % hues,
        "texture": object_id % textures,
    }


def object_id(shape: np.ndarray, colour: np.ndarray, texture: np.ndarray) -> np.ndarray:
    """Inverse of :func:`object_attributes`."""
    return (shape * HUE_BINS + colour) * len(appearance.OBJECT_TEXTURES) + texture


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


def _generate(rng: np.random.Generator, labels: np.ndarray, objects: np.ndarray, frames: int, size: int,
              progress: bool, desc: str, layout: np.ndarray | None = None, **extra: np.ndarray) -> Generated:
    """Render one object per clip: its identity from ``objects``, the rest of its look and the
    scene from :func:`appearance.sample`, with a structural ``layout`` in every scene if given
    (indices into ``appearance.LAYOUTS``); ``extra`` latents are recorded in meta."""
    attributes = object_attributes(objects)
    look = appearance.sample(rng, len(labels))
    # The object's hue lies in its identity's bin; saturation, brightness and the rest stay random.
    hue = (attributes["colour"] + rng.random(len(labels))) / HUE_BINS
    look.update(appearance.colours_of_luma(rng, look["object_luma"], "object", appearance.OBJECT_SATURATION_POWER,
                                           hue=hue))
    look["object_texture"] = np.asarray(appearance.OBJECT_TEXTURES)[attributes["texture"]]
    meta = {
        "pair": np.asarray(["/".join(pair) for pair in PAIRS])[labels // 2],
        "object_id": objects,
        "shape": np.asarray(render.SHAPES)[attributes["shape"]],
        "colour": attributes["colour"],
        **extra,
        **look,
        **sample_motion(rng, labels, frames, size),
    }
    if layout is not None:
        meta.update(appearance.sample_layout(rng, layout, look["scene_luma"]))

    def draw(indices: np.ndarray) -> Tensor:
        return appearance.finish(_draw_object(meta, indices, frames, size)[0], meta, indices)

    return Generated(render_chunks(len(labels), frames, size, rng, draw, meta["noise"], progress, desc), labels, meta)


def _draw_object(meta: dict[str, np.ndarray], indices: np.ndarray, frames: int, size: int) -> tuple[Tensor, Tensor]:
    main, second = appearance.object_colours(meta, indices)
    shapes = torch.as_tensor([render.SHAPES.index(name) for name in meta["shape"][indices]])
    return render.draw_objects(
        appearance.scene(meta, indices, size), shapes, main, *motion_paths(meta, indices, frames),
        texture=lambda u, v: appearance.texture_mix(meta, indices, u, v), second_colour=second,
    )


def annotate(meta: dict[str, np.ndarray], indices: np.ndarray, frames: int, size: int) -> tuple[Tensor, Tensor]:
    """The object's coverage (B, T, S, S) and its exact forward optical flow (B, 2, T-1, S, S)
    in pixels (dx, dy) on the pixels it covers: where the point of the object under a pixel at
    frame t is at frame t + 1 (zero where only opacity changes)."""
    x, y, radius, angle, alpha = motion_paths(meta, indices, frames)
    _, mask = _draw_object(meta, indices, frames, size)
    u, v = render.local_coordinates(size, x, y, radius, angle)  # (B, T, S*S)
    u, v = u[:, :-1], v[:, :-1]
    cos, sin = angle[:, 1:, None].cos(), angle[:, 1:, None].sin()
    scale = radius[:, 1:, None]
    next_x = x[:, 1:, None] + scale * (cos * u - sin * v)
    next_y = y[:, 1:, None] + scale * (sin * u + cos * v)
    grid_x, grid_y = (c.flatten() for c in render.pixel_grid(size))
    flow = torch.stack([next_x - grid_x, next_y - grid_y], 1)  # (B, 2, T-1, S*S)
    covered = (mask[:, :-1] > 0).flatten(2)[:, None]
    flow = torch.where(covered, flow, torch.zeros(()))
    return mask, flow.view(len(indices), 2, frames - 1, size, size)


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
    return _generate(rng, labels, objects, frames, size, progress, f"ssv2/{split}")


def kinetics(rng: np.random.Generator, split: str, n: int, frames: int, size: int,
             long_tail: float | None, progress: bool, cue_strength: float = 0.7) -> Generated:
    """Kinetics-400 stand-in: the ten ssv2 motions, but the scene's layout correlates with the class.

    Every scene holds a large static structure (a bar, a pole, a diagonal band, a frame, a ring,
    corner blocks or a cross; see ``appearance.LAYOUTS``) in a colour of its own. With
    probability ``cue_strength`` it is the class's typical layout (recorded as ``cued`` in meta),
    otherwise one drawn at random. The cue is structure, not colour, so it survives recolouring
    and stylization as a real scene does. A single frame therefore reveals the class in about
    ``cue_strength`` of the clips (plus chance on the rest): informative but not sufficient, so a
    model gains from both the static cue and the motion.
    """
    if not 0.0 <= cue_strength <= 1.0:
        raise ValueError(f"cue_strength must be in [0, 1] (the probability of a class-typical scene), got {cue_strength}")
    labels = sample_labels(rng, n, len(ACTIONS), long_tail)
    cued = rng.random(n) < cue_strength
    layout = np.where(cued, HOME_LAYOUT[labels], rng.integers(0, len(appearance.LAYOUTS), n))
    objects = rng.integers(0, N_OBJECTS, n)
    return _generate(rng, labels, objects, frames, size, progress, f"kinetics/{split}", layout=layout, cued=cued)


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
    return _generate(rng, labels, objects, frames, size, progress, f"something_else/{split}")


register(WorldSpec("ssv2", ACTIONS, ssv2, sys.modules[__name__], annotate))
register(WorldSpec("kinetics", ACTIONS, kinetics, sys.modules[__name__], annotate))
register(WorldSpec("something_else", ACTIONS, something_else, sys.modules[__name__], annotate))
