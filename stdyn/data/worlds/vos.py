"""Video object segmentation (AVOS) worlds: ``davis``, ``ytvos``, ``imagenetvid``, ``tao`` and ``moca``.

Each clip shows one foreground object moving over a textured scene; the label is its mask in
every frame. Around it, at rates set per world (:data:`VOS_SETTINGS`), are the things that make
motion worth learning and neither appearance nor motion sufficient on its own:

- camera motion: a pan of the whole scene, so static things have flow too;
- static salient distractors: objects drawn like the foreground (as far from the scene in luma)
  that never move in the world, so appearance alone cannot pick the foreground;
- a moving distractor that is not foreground: either dull scene-coloured clutter swinging back
  and forth, or a small fast salient object, so motion alone cannot pick it either;
- camouflage: the object carries a patch of its own scene's texture and is visible only by its
  motion (every ``moca`` clip; a quarter of davis's and 30% of ytvos's, the worlds the
  segmenters train on; fewer in imagenetvid's and tao's).

The foreground is drawn last, so it is never occluded and its mask is its whole coverage.
Positions are in image pixels: the object's path is drawn in the image (which sets the centre
bias), static things sit still in the world and move by ``-camera`` in the image.

``make(name, split, n)`` renders a :class:`VosWorld`, a torch Dataset of dicts with the clip,
the masks, the forward optical flow and its HSV flow image. The flow is one of (:data:`FLOWS`):

- ``"estimated"`` (the default): the exact flow with the errors of a learned estimator
  (:class:`FlowErrors`, drawn per clip from the seed): smoothed, so motion boundaries bleed into
  the background and thin parts fade; a per-clip and per-frame magnitude error; smooth noise;
  and in about one frame in ten a failed estimate with little motion left. Motion alone then
  gives a coarse, sometimes missing mask, and appearance is needed for the outline and to tell
  the foreground from a moving distractor;
- ``"exact"``: from the latents. Too good a cue: a motion-only model segments nearly every
  clip, camouflaged or not, so two-stream models have nothing to gain from appearance;
- ``"farneback"``: OpenCV's Farneback on the rendered uint8 frames. At 32 pixels it misses most
  camouflaged objects (their texture matches the scene), so motion is little use anywhere.

The clips and masks are the same under every flow.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from .. import cache as _cache
from .. import flow as _flow
from . import appearance, base, render
from .base import SPLITS, as_tensor, linear_path, render_chunks, single_thread, split_rng


@dataclass(frozen=True)
class VosSettings:
    """What defines a VOS world. Lengths are fractions of the frame size, speeds fractions of the
    frame size per frame, rates probabilities per clip."""

    description: str
    frames: int  # default clip length
    position_spread: float | None  # std of the path's midpoint about the centre; None: uniform
    radius: tuple[float, float]
    speed: tuple[float, float]
    spin: float  # largest turn per frame (radians)
    scale_change: tuple[float, float]  # last radius / first radius
    shapes: tuple[str, ...] = render.SHAPES
    camera_rate: float = 0.0
    camera_speed: tuple[float, float] = (0.01, 0.03)
    static_rate: float = 0.0  # chance of each of MAX_STATIC static salient distractors
    mover_rate: float = 0.0  # chance of a moving non-foreground distractor
    camouflage_rate: float = 0.0
    weak_labels: bool = False  # training masks are boxes or sloppy masks
    box_rate: float = 0.5  # share of weakly labelled clips that get boxes (the rest: sloppy masks)
    min_travel: float = 0.0  # clips whose object travels less are dropped (MoCA's locomotion filter)


VOS_SETTINGS: dict[str, VosSettings] = {
    "davis": VosSettings(
        "DAVIS stand-in: short clips of one salient object with a strong centre bias; some "
        "camera pans, distractors and camouflaged objects. A single frame reveals the object "
        "in most clips.",
        frames=8, position_spread=0.07, radius=(0.15, 0.22), speed=(0.02, 0.05), spin=0.06,
        scale_change=(0.9, 1.1), shapes=("ellipse", "rectangle", "triangle", "diamond"),
        camera_rate=0.3, camera_speed=(0.01, 0.03), static_rate=0.35, mover_rate=0.4, camouflage_rate=0.25,
    ),
    "ytvos": VosSettings(
        "YouTube-VOS stand-in: more varied objects (all shapes, wider ranges of size, speed, "
        "spin and scale change) with a moderate centre bias, more camera motion and distractors. "
        "A single frame reveals the object in most clips.",
        frames=8, position_spread=0.14, radius=(0.09, 0.26), speed=(0.01, 0.07), spin=0.1,
        scale_change=(0.8, 1.25), camera_rate=0.4, camera_speed=(0.01, 0.04), static_rate=0.45,
        mover_rate=0.5, camouflage_rate=0.3,
    ),
    "imagenetvid": VosSettings(
        "ImageNet-VID stand-in: weak labels. Training masks are the object's bounding box (half "
        "the clips) or a sloppy mask (scaled, shifted, turned); the exact mask stays in "
        "`exact_masks`, and val masks are exact. A single frame reveals the object in most clips.",
        frames=8, position_spread=0.12, radius=(0.1, 0.24), speed=(0.015, 0.06), spin=0.08,
        scale_change=(0.85, 1.15), camera_rate=0.4, camera_speed=(0.01, 0.04), static_rate=0.35,
        mover_rate=0.35, camouflage_rate=0.15, weak_labels=True, box_rate=0.5,
    ),
    "tao": VosSettings(
        "TAO stand-in: longer clips (16 frames), smaller objects placed almost uniformly (diffuse "
        "centre bias), camera motion in most clips, many distractors. A single frame reveals the "
        "object in most clips.",
        frames=16, position_spread=None, radius=(0.08, 0.18), speed=(0.01, 0.035), spin=0.05,
        scale_change=(0.9, 1.1), camera_rate=0.8, camera_speed=(0.01, 0.03), static_rate=0.5,
        mover_rate=0.5, camouflage_rate=0.15,
    ),
    "moca": VosSettings(
        "MoCA stand-in (evaluation): every object is camouflaged, carrying its scene's texture, "
        "so a single frame reveals nothing about it; only clips whose object travels at least "
        "15% of the frame are kept. No distractors; a few camera pans.",
        frames=8, position_spread=0.12, radius=(0.14, 0.24), speed=(0.0, 0.06), spin=0.05,
        scale_change=(0.9, 1.1), camera_rate=0.3, camera_speed=(0.01, 0.025), camouflage_rate=1.0,
        min_travel=0.15,
    ),
}
VOS_WORLDS: dict[str, str] = {name: settings.description for name, settings in VOS_SETTINGS.items()}

FLOWS: tuple[str, ...] = ("exact", "estimated", "farneback")
MAX_STATIC = 2
CAMOUFLAGE_PATTERNS: tuple[str, ...] = ("stripes", "checker", "blobs")  # textured: motion shows
CAMOUFLAGE_CONTRAST = (0.15, 0.35)  # luma gap between a camouflage scene's two colours
CAMOUFLAGE_OFFSET = 0.05  # the object's texture comes from up to this far away in its scene
MOVER_KINDS: tuple[str, ...] = ("drift", "fast")
FRAMES_RANGE, SIZE_RANGE = (2, 64), (16, 256)
CACHE_FORMAT = 2


@dataclass(frozen=True)
class FlowErrors:
    """How ``flow="estimated"`` degrades the exact flow of a clip, the errors of a learned flow
    estimator on small frames. Lengths are fractions of the frame size; ranges are drawn per clip."""

    blur: tuple[float, float] = (0.04, 0.08)  # std of the Gaussian smoothing (motion boundaries bleed)
    noise: tuple[float, float] = (0.001, 0.004)  # std of smooth additive noise, per frame
    gain_spread: float = 0.25  # std of the log of the clip's magnitude error
    frame_gain_spread: float = 0.1  # std of the log of each frame's extra magnitude error
    fail_rate: float = 0.1  # chance that a frame's estimate fails
    fail_gain: tuple[float, float] = (0.0, 0.4)  # what is left of a failed frame's motion
    fail_noise: float = 3.0  # and how much louder its noise is


ESTIMATED_FLOW = FlowErrors()


class Pose(NamedTuple):
    """Per-frame (B, T) centre x, y (image pixels), radius (pixels) and angle (radians)."""

    x: Tensor
    y: Tensor
    radius: Tensor
    angle: Tensor


# ---------------------------------------------------------------------------------------------
# Latents


def _check(name: str, split: str, n: int, frames: int | None, size: int, seed: int, flow: str) -> VosSettings:
    if name not in VOS_SETTINGS:
        raise ValueError(f"unknown VOS world {name!r}; available VOS worlds: {', '.join(VOS_SETTINGS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; splits: {', '.join(SPLITS)}")
    if flow not in FLOWS:
        raise ValueError(f"unknown flow {flow!r}; flows: {', '.join(FLOWS)}")
    limits = {"n": (1, None), "frames": FRAMES_RANGE, "size": SIZE_RANGE, "seed": (0, None)}
    values = {"n": n, "frames": frames, "size": size, "seed": seed}
    for label, value in values.items():
        if label == "frames" and value is None:
            continue
        least, most = limits[label]
        valid = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
        if not valid or value < least or (most is not None and value > most):
            bound = f"an integer >= {least}" if most is None else f"an integer in [{least}, {most}]"
            raise ValueError(f"{label} must be {bound}, got {value!r}")
    return VOS_SETTINGS[name]


def _object_look(rng: np.random.Generator, luma: np.ndarray, scene_luma: np.ndarray, prefix: str,
                 texture: bool = True) -> dict[str, np.ndarray]:
    """Colours, texture and texture frequency of an extra object, named ``{prefix}_...``."""
    n = len(luma)
    second = luma + 0.5 * (scene_luma - luma) * rng.uniform(0.0, 1.0, n)
    kinds = appearance.OBJECT_TEXTURES if texture else ("solid",)
    return {
        **appearance.colours_of_luma(rng, luma, prefix, appearance.OBJECT_SATURATION_POWER),
        **appearance.colours_of_luma(rng, second, f"{prefix}2"),
        f"{prefix}_texture": np.asarray(kinds)[rng.integers(0, len(kinds), n)],
        f"{prefix}_texture_frequency": rng.uniform(1.0, 2.5, n),
    }


def _as_object(meta: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The columns of an extra object under the names appearance's object helpers read."""
    view = {f"object{part}_{channel}": meta[f"{prefix}{part}_{channel}"]
            for part in ("", "2") for channel in ("hue", "saturation", "value")}
    return {**view, "object_texture": meta[f"{prefix}_texture"],
            "texture_frequency": meta[f"{prefix}_texture_frequency"]}


def _shape_indices(rng: np.random.Generator, shapes: tuple[str, ...], n: int) -> np.ndarray:
    return np.asarray([render.SHAPES.index(s) for s in shapes])[rng.integers(0, len(shapes), n)]


def _sample_paths(rng: np.random.Generator, s: VosSettings, n: int, frames: int, size: int) -> dict[str, np.ndarray]:
    """Foreground paths in the image: linear in position, radius and angle over the clip."""
    radius = rng.uniform(*s.radius, n) * size
    scale = rng.uniform(*s.scale_change, n)
    margin = radius * np.maximum(scale, 1.0) + 1.0  # the object stays inside the frame
    room = size - 2 * margin
    heading = rng.uniform(0.0, 2 * np.pi, n)
    travel = np.minimum(rng.uniform(*s.speed, n) * size * (frames - 1), 0.9 * room)
    dx, dy = travel * np.cos(heading), travel * np.sin(heading)
    if s.position_spread is None:
        mid_x, mid_y = rng.uniform(0.0, 1.0, (2, n))
        mid_x = margin + np.abs(dx) / 2 + mid_x * (room - np.abs(dx))
        mid_y = margin + np.abs(dy) / 2 + mid_y * (room - np.abs(dy))
    else:
        mid_x, mid_y = size / 2 + s.position_spread * size * rng.standard_normal((2, n))
        mid_x = np.clip(mid_x, margin + np.abs(dx) / 2, size - margin - np.abs(dx) / 2)
        mid_y = np.clip(mid_y, margin + np.abs(dy) / 2, size - margin - np.abs(dy) / 2)
    angle = rng.uniform(0.0, 2 * np.pi, n)
    return {
        "shape": np.asarray(render.SHAPES)[_shape_indices(rng, s.shapes, n)],
        "x_start": mid_x - dx / 2, "x_end": mid_x + dx / 2,
        "y_start": mid_y - dy / 2, "y_end": mid_y + dy / 2,
        "radius_start": radius, "radius_end": radius * scale,
        "angle_start": angle, "angle_end": angle + rng.uniform(-s.spin, s.spin, n) * (frames - 1),
        "travel": travel,
    }


def _sample_motion(rng: np.random.Generator, s: VosSettings, n: int, frames: int, size: int) -> dict[str, np.ndarray]:
    """Foreground paths; with ``min_travel``, candidates are drawn until ``n`` travel far enough."""
    kept: list[dict[str, np.ndarray]] = []
    count = 0
    while count < n:
        candidates = _sample_paths(rng, s, max(2 * (n - count), 16), frames, size)
        keep = candidates["travel"] >= s.min_travel * size
        kept.append({key: values[keep] for key, values in candidates.items()})
        count += int(keep.sum())
    return {key: np.concatenate([part[key] for part in kept])[:n] for key in kept[0]}


def _sample_camera(rng: np.random.Generator, s: VosSettings, n: int, frames: int, size: int) -> dict[str, np.ndarray]:
    """A linear pan from (0, 0) to (camera_dx, camera_dy) pixels over the clip, in some clips."""
    moves = rng.random(n) < s.camera_rate
    travel = np.where(moves, rng.uniform(*s.camera_speed, n) * size * (frames - 1), 0.0)
    heading = rng.uniform(0.0, 2 * np.pi, n)
    return {"camera_moves": moves, "camera_dx": travel * np.cos(heading), "camera_dy": travel * np.sin(heading)}


def _sample_statics(rng: np.random.Generator, s: VosSettings, look: dict[str, np.ndarray],
                    size: int) -> dict[str, np.ndarray]:
    """Static salient distractors: as far from the scene in luma as the foreground, still in the world."""
    n = len(look["scene_luma"])
    meta: dict[str, np.ndarray] = {}
    for k in range(MAX_STATIC):
        prefix = f"static{k}"
        meta[f"{prefix}_present"] = rng.random(n) < s.static_rate
        meta[f"{prefix}_shape"] = _shape_indices(rng, render.SHAPES, n)
        meta[f"{prefix}_x"], meta[f"{prefix}_y"] = rng.uniform(0.1, 0.9, (2, n)) * size
        meta[f"{prefix}_radius"] = rng.uniform(*s.radius, n) * size
        meta[f"{prefix}_angle"] = rng.uniform(0.0, 2 * np.pi, n)
        luma = np.clip(look["object_luma"] + rng.uniform(-0.1, 0.1, n), 0.03, 0.97)
        meta.update(_object_look(rng, luma, look["scene_luma"], prefix))
    meta["statics"] = sum(meta[f"static{k}_present"].astype(np.int64) for k in range(MAX_STATIC))
    return meta


def _sample_mover(rng: np.random.Generator, s: VosSettings, look: dict[str, np.ndarray], frames: int,
                  size: int) -> dict[str, np.ndarray]:
    """A moving distractor that is not foreground, at position ``x0 + v t + a sin(omega t + phase)``:

    - ``drift``: dull clutter (scene-like luma, no texture) of the foreground's size swinging back
      and forth: its flow looks like the foreground's, its appearance does not;
    - ``fast``: a small salient textured object crossing the frame fast.
    """
    n = len(look["scene_luma"])
    present = rng.random(n) < s.mover_rate
    kind = np.where(present, np.asarray(MOVER_KINDS)[rng.integers(0, len(MOVER_KINDS), n)], "none")
    drift, fast = kind == "drift", kind == "fast"
    heading = rng.uniform(0.0, 2 * np.pi, n)
    direction = np.stack([np.cos(heading), np.sin(heading)])
    speed = np.where(fast, rng.uniform(0.08, 0.14, n) * size, 0.0)
    amplitude = np.where(drift, rng.uniform(0.08, 0.15, n) * size, 0.0)
    mid = rng.uniform(0.25, 0.75, (2, n)) * size
    start = mid - direction * speed * (frames - 1) / 2
    dull = np.clip(look["scene_luma"] + rng.choice([-1.0, 1.0], n) * rng.uniform(0.06, 0.15, n), 0.03, 0.97)
    salient = np.clip(look["object_luma"] + rng.uniform(-0.1, 0.1, n), 0.03, 0.97)
    meta = {
        "mover_kind": kind,
        "mover_shape": _shape_indices(rng, render.SHAPES, n),
        "mover_x0": start[0], "mover_y0": start[1],
        "mover_vx": speed * direction[0], "mover_vy": speed * direction[1],
        "mover_ax": amplitude * direction[0], "mover_ay": amplitude * direction[1],
        "mover_omega": 2 * np.pi / rng.uniform(3.0, 6.0, n),  # a period of 3 to 6 frames
        "mover_phase": rng.uniform(0.0, 2 * np.pi, n),
        "mover_radius": np.where(fast, rng.uniform(0.05, 0.08, n), rng.uniform(*s.radius, n)) * size,
        "mover_angle": rng.uniform(0.0, 2 * np.pi, n),
        **_object_look(rng, np.where(drift, dull, salient), look["scene_luma"], "mover"),
    }
    meta["mover_texture"] = np.where(drift, "solid", meta["mover_texture"])
    return meta


def _sample_camouflage(rng: np.random.Generator, s: VosSettings, look: dict[str, np.ndarray],
                       size: int) -> dict[str, np.ndarray]:
    """Which objects blend in, and where in their scene their texture comes from. A camouflaged
    clip's scene is textured with a clear luma gap between its colours (on a flat scene a
    camouflaged object would be invisible even in motion)."""
    n = len(look["scene_luma"])
    camouflaged = rng.random(n) < s.camouflage_rate
    gap = rng.uniform(*CAMOUFLAGE_CONTRAST, n)
    up = np.where(look["scene_luma"] + gap > 0.97, False,
                  np.where(look["scene_luma"] - gap < 0.03, True, rng.random(n) < 0.5))
    second = appearance.colours_of_luma(rng, np.clip(look["scene_luma"] + np.where(up, gap, -gap), 0.03, 0.97),
                                        "scene2")
    pattern = np.asarray(CAMOUFLAGE_PATTERNS)[rng.integers(0, len(CAMOUFLAGE_PATTERNS), n)]
    meta = {
        "camouflaged": camouflaged,
        "camouflage_dx": rng.uniform(-CAMOUFLAGE_OFFSET, CAMOUFLAGE_OFFSET, n) * size,
        "camouflage_dy": rng.uniform(-CAMOUFLAGE_OFFSET, CAMOUFLAGE_OFFSET, n) * size,
        "pattern": np.where(camouflaged, pattern, look["pattern"]),
    }
    for key, values in second.items():
        meta[key] = np.where(camouflaged, values, look[key])
    return meta


def _sample_labels(rng: np.random.Generator, s: VosSettings, split: str, n: int, size: int) -> dict[str, np.ndarray]:
    """How each clip's training mask is made: ``exact``, ``box`` or ``sloppy`` (the shape drawn at
    a perturbed pose, as a hurried annotator would)."""
    weak = s.weak_labels and split == "train"
    kind = np.where(rng.random(n) < s.box_rate, "box", "sloppy") if weak else np.full(n, "exact")
    return {
        "label_kind": kind,
        "label_scale": rng.uniform(0.8, 1.2, n),
        "label_dx": rng.uniform(-0.05, 0.05, n) * size,
        "label_dy": rng.uniform(-0.05, 0.05, n) * size,
        "label_angle": rng.uniform(-0.3, 0.3, n),
    }


def sample_latents(rng: np.random.Generator, name: str, split: str, n: int, frames: int,
                   size: int) -> dict[str, np.ndarray]:
    """Every latent of ``n`` clips of world ``name``, one row per clip (see the module docstring)."""
    s = VOS_SETTINGS[name]
    look = appearance.sample(rng, n)
    meta = {**look, **_sample_motion(rng, s, n, frames, size), **_sample_camera(rng, s, n, frames, size)}
    meta.update(_sample_camouflage(rng, s, look, size))
    meta.update(_sample_statics(rng, s, look, size))
    meta.update(_sample_mover(rng, s, look, frames, size))
    meta.update(_sample_labels(rng, s, split, n, size))
    return meta


# ---------------------------------------------------------------------------------------------
# Drawing


def scene_padding(name: str, frames: int, size: int) -> int:
    """Pixels of scene beyond each side of the frame: enough for the world's largest pan. The
    same for every clip of a world, so the scene's look does not tell which clips pan."""
    s = VOS_SETTINGS[name]
    pan = s.camera_speed[1] * size * (frames - 1) if s.camera_rate > 0 else 0.0
    return math.ceil(pan) + 2


def camera_path(meta: dict[str, np.ndarray], indices: np.ndarray, frames: int) -> tuple[Tensor, Tensor]:
    """The camera's offset (B, T) in pixels, x and y."""
    zero = np.zeros(len(meta["camera_dx"]))
    return (linear_path(zero, meta["camera_dx"], indices, frames),
            linear_path(zero, meta["camera_dy"], indices, frames))


def foreground_pose(meta: dict[str, np.ndarray], indices: np.ndarray, frames: int) -> Pose:
    """The foreground's per-frame pose in the image."""
    return Pose(*(linear_path(meta[f"{a}_start"], meta[f"{a}_end"], indices, frames)
                  for a in ("x", "y", "radius", "angle")))


def _static_pose(meta: dict[str, np.ndarray], prefix: str, indices: np.ndarray, camera: tuple[Tensor, Tensor]) -> Pose:
    ones = torch.ones_like(camera[0])
    return Pose(as_tensor(meta[f"{prefix}_x"], indices)[:, None] - camera[0],
                as_tensor(meta[f"{prefix}_y"], indices)[:, None] - camera[1],
                as_tensor(meta[f"{prefix}_radius"], indices)[:, None] * ones,
                as_tensor(meta[f"{prefix}_angle"], indices)[:, None] * ones)


def _mover_pose(meta: dict[str, np.ndarray], indices: np.ndarray, camera: tuple[Tensor, Tensor]) -> Pose:
    time = torch.arange(camera[0].shape[1], dtype=torch.float32)

    def column(name: str) -> Tensor:
        return as_tensor(meta[f"mover_{name}"], indices)[:, None]

    swing = torch.sin(column("omega") * time + column("phase"))
    x = column("x0") + column("vx") * time + column("ax") * swing - camera[0]
    y = column("y0") + column("vy") * time + column("ay") * swing - camera[1]
    ones = torch.ones_like(x)
    return Pose(x, y, column("radius") * ones, column("angle") * ones)


def _draw(pose: Pose, shapes: Tensor, meta: dict[str, np.ndarray], indices: np.ndarray, size: int,
          alpha: Tensor) -> tuple[Tensor, Tensor]:
    """An object's premultiplied colour layer (B, 3, T, S, S) and coverage (B, T, S, S);
    ``meta`` names its colours and texture as the foreground's (see :func:`_as_object`)."""
    main, second = appearance.object_colours(meta, indices)
    zeros = torch.zeros(len(indices), 3, size, size)
    return render.draw_objects(zeros, shapes, main, *pose, alpha, second_colour=second,
                               texture=lambda u, v: appearance.texture_mix(meta, indices, u, v))


def _shape_indices_of(names: np.ndarray) -> Tensor:
    """Indices into ``render.SHAPES`` of shape names."""
    return torch.as_tensor([render.SHAPES.index(name) for name in names])


def _over(clips: Tensor, layer: Tensor, mask: Tensor) -> Tensor:
    """A premultiplied layer composited over clips (B, 3, T, S, S)."""
    return clips.mul_(1.0 - mask[:, None]).add_(layer)


def _sample_canvas(canvas: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """Bilinear samples (B, 3, *x.shape[1:]) of canvases (B, 3, H, W) at pixel coordinates
    ``x, y`` (B, ...); pixel centres at +0.5, mirrored beyond the edges."""
    height, width = canvas.shape[-2:]
    grid = torch.stack([2 * x / width - 1, 2 * y / height - 1], -1).reshape(len(x), 1, -1, 2)
    out = F.grid_sample(canvas, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return out.view(*canvas.shape[:2], *x.shape[1:])


def _rigid_flow(pose: Pose, size: int) -> Tensor:
    """Forward flow (B, 2, T-1, S*S) of a rigid object at every pixel: where the object point under
    a pixel at frame t is at frame t + 1."""
    u, v = render.local_coordinates(size, *pose)
    u, v = u[:, :-1], v[:, :-1]
    cos, sin = pose.angle[:, 1:, None].cos(), pose.angle[:, 1:, None].sin()
    scale = pose.radius[:, 1:, None]
    grid_x, grid_y = (c.flatten() for c in render.pixel_grid(size))
    next_x = pose.x[:, 1:, None] + scale * (cos * u - sin * v)
    next_y = pose.y[:, 1:, None] + scale * (sin * u + cos * v)
    return torch.stack([next_x - grid_x, next_y - grid_y], 1)


def _camouflage_texture(canvas: Tensor, pose: Pose, camera: tuple[Tensor, Tensor], meta: dict[str, np.ndarray],
                        indices: np.ndarray, size: int, pad: int) -> Tensor:
    """The scene texture (B, 3, T, S, S) that a camouflaged object carries: the patch of its scene
    (canvas coordinates) where it stands mid-clip, shifted by its camouflage offset, moving,
    turning and scaling with it. Anchoring mid-clip keeps the seams at its outline, where the
    texture it carries meets the scene it has moved onto, small on average."""
    u, v = render.local_coordinates(size, *pose)
    mid = slice((pose.x.shape[1] - 1) // 2, (pose.x.shape[1] - 1) // 2 + 1)
    radius, angle = pose.radius[:, mid, None], pose.angle[:, mid, None]
    offset_x, offset_y = (as_tensor(meta[f"camouflage_{d}"], indices)[:, None, None] for d in ("dx", "dy"))
    x = pose.x[:, mid, None] + camera[0][:, mid, None] + pad + offset_x
    y = pose.y[:, mid, None] + camera[1][:, mid, None] + pad + offset_y
    x = x + radius * (angle.cos() * u - angle.sin() * v)
    y = y + radius * (angle.sin() * u + angle.cos() * v)
    return _sample_canvas(canvas, x, y).view(len(indices), 3, -1, size, size)


def _box(mask: Tensor) -> Tensor:
    """Each frame's bounding box (B, T, S, S) of a binary mask (B, T, S, S)."""
    def filled(hit: Tensor) -> Tensor:  # between the first and the last hit
        return hit.cummax(-1).values & hit.flip(-1).cummax(-1).values.flip(-1)

    rows, cols = filled(mask.any(-1)), filled(mask.any(-2))
    return rows[..., :, None] & cols[..., None, :]


def _training_masks(exact: Tensor, meta: dict[str, np.ndarray], indices: np.ndarray, frames: int,
                    size: int) -> Tensor:
    """The masks a model is trained on: exact, the box around the exact mask, or sloppy."""
    kind = np.asarray(meta["label_kind"])[indices]
    out = exact.clone()
    boxes = torch.as_tensor(kind == "box")
    if boxes.any():
        out[boxes] = _box(exact[boxes])
    sloppy = np.flatnonzero(kind == "sloppy")
    if len(sloppy):
        rows = indices[sloppy]
        pose = foreground_pose(meta, rows, frames)
        pose = Pose(pose.x + as_tensor(meta["label_dx"], rows)[:, None],
                    pose.y + as_tensor(meta["label_dy"], rows)[:, None],
                    pose.radius * as_tensor(meta["label_scale"], rows)[:, None],
                    pose.angle + as_tensor(meta["label_angle"], rows)[:, None])
        _, cover = _draw(pose, _shape_indices_of(meta["shape"][rows]), meta, rows, size, torch.ones_like(pose.x))
        out[torch.as_tensor(sloppy)] = cover >= 0.5
    return out


def draw_clips(meta: dict[str, np.ndarray], indices: np.ndarray, frames: int, size: int, pad: int,
               with_flow: bool = True) -> tuple[Tensor, Tensor, Tensor | None]:
    """Clips (B, 3, T, S, S) in [0, 1] before sensor noise, the foreground's binary masks
    (B, T, S, S) and, with ``with_flow``, the exact forward flow (B, 2, T-1, S, S) in pixels: the
    foreground's on its mask, the moving distractor's on its mask, the camera's elsewhere."""
    batch = len(indices)
    camera = camera_path(meta, indices, frames)
    canvas = appearance.scene(meta, indices, size + 2 * pad)
    grid_x, grid_y = (c.flatten() for c in render.pixel_grid(size))
    clips = _sample_canvas(canvas, grid_x + pad + camera[0][..., None], grid_y + pad + camera[1][..., None])
    clips = clips.view(batch, 3, frames, size, size)
    for k in range(MAX_STATIC):
        present = as_tensor(meta[f"static{k}_present"], indices)
        if present.any():
            prefix = f"static{k}"
            layer, cover = _draw(_static_pose(meta, prefix, indices, camera),
                                 torch.as_tensor(meta[f"{prefix}_shape"][indices]), _as_object(meta, prefix),
                                 indices, size, present[:, None].expand(-1, frames))
            _over(clips, layer, cover)
    mover_present = torch.as_tensor(np.asarray(meta["mover_kind"])[indices] != "none")
    mover_pose = _mover_pose(meta, indices, camera)
    mover_cover = None
    if mover_present.any():
        layer, mover_cover = _draw(mover_pose, torch.as_tensor(meta["mover_shape"][indices]),
                                   _as_object(meta, "mover"), indices, size,
                                   mover_present[:, None].float().expand(-1, frames))
        _over(clips, layer, mover_cover)
    pose = foreground_pose(meta, indices, frames)
    layer, cover = _draw(pose, _shape_indices_of(meta["shape"][indices]), meta, indices, size, torch.ones_like(pose.x))
    camouflaged = np.flatnonzero(np.asarray(meta["camouflaged"])[indices])
    if len(camouflaged):
        rows = torch.as_tensor(camouflaged)
        texture = _camouflage_texture(canvas[rows], Pose(*(p[rows] for p in pose)),
                                      (camera[0][rows], camera[1][rows]), meta, indices[camouflaged], size, pad)
        layer[rows] = texture * cover[rows][:, None]
    _over(clips, layer, cover)
    clips = appearance.finish(clips, meta, indices)
    masks = cover >= 0.5
    if not with_flow:
        return clips, masks, None
    velocity = torch.stack([camera[0][:, 1:] - camera[0][:, :-1], camera[1][:, 1:] - camera[1][:, :-1]], 1)
    flow = (-velocity)[..., None].expand(-1, -1, -1, size * size)
    if mover_cover is not None:
        on_mover = ((mover_cover[:, :-1] >= 0.5) & mover_present[:, None, None, None]).flatten(2)[:, None]
        flow = torch.where(on_mover, _rigid_flow(mover_pose, size), flow)
    flow = torch.where(masks[:, :-1].flatten(2)[:, None], _rigid_flow(pose, size), flow)
    return clips, masks, flow.reshape(batch, 2, frames - 1, size, size)


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian smoothing (std ``sigma`` pixels, mirrored edges) of maps (..., H, W)."""
    if sigma <= 0:
        return x.clone()
    radius = min(max(1, math.ceil(3 * sigma)), min(x.shape[-2:]) - 1)
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / sigma) ** 2)
    taps = taps / taps.sum()
    flat = x.reshape(-1, 1, *x.shape[-2:])
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="reflect"), taps.view(1, 1, 1, -1))
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="reflect"), taps.view(1, 1, -1, 1))
    return flat.view(x.shape)


def degrade_flow(flow: Tensor, seed: int, errors: FlowErrors | None = None) -> Tensor:
    """An estimate (2, T-1, S, S) of one clip's exact flow (2, T-1, S, S), drawn from ``seed``:
    smoothed (motion boundaries blur, thin parts fade), scaled by a per-clip and per-frame gain,
    with smooth noise, and in a few frames failed (little motion left, louder noise)."""
    errors = ESTIMATED_FLOW if errors is None else errors
    rng = np.random.default_rng(seed)
    size, steps = flow.shape[-1], flow.shape[1]
    sigma = rng.uniform(*errors.blur) * size
    gain = np.exp(errors.gain_spread * rng.standard_normal() + errors.frame_gain_spread * rng.standard_normal(steps))
    failed = rng.random(steps) < errors.fail_rate
    gain = np.where(failed, gain * rng.uniform(*errors.fail_gain, steps), gain)
    loudness = rng.uniform(*errors.noise) * size * np.where(failed, errors.fail_noise, 1.0)
    noise = gaussian_blur(torch.as_tensor(rng.standard_normal(flow.shape), dtype=torch.float32), sigma)
    noise = noise / noise.std(dim=(0, 2, 3), keepdim=True).clamp(min=1e-6)
    per_frame = (lambda v: torch.as_tensor(v, dtype=torch.float32).view(1, steps, 1, 1))
    return gaussian_blur(flow.float(), sigma) * per_frame(gain) + noise * per_frame(loudness)


def estimate_flow(clips: Tensor) -> Tensor:
    """Farneback flow (N, 2, T-1, S, S) of uint8 clips (N, 3, T, S, S)."""
    return torch.stack([_flow.farneback(clip.float().div_(255.0)).transpose(0, 1) for clip in clips])


def max_magnitude(name: str, size: int) -> float:
    """The flow magnitude (pixels per frame) at full saturation in world ``name``'s flow images:
    the fastest foreground (translation plus the spin at its rim) seen from the fastest camera."""
    s = VOS_SETTINGS[name]
    camera = s.camera_speed[1] if s.camera_rate > 0 else 0.0
    return (s.speed[1] + s.spin * s.radius[1] * s.scale_change[1] + camera) * size


def centre_bias(masks: Tensor) -> Tensor:
    """The centre-bias map (H, W): the average of binary masks (..., H, W) per pixel over every
    other dimension, divided by its maximum (all zeros when no mask covers any pixel)."""
    if not isinstance(masks, Tensor) or masks.dim() < 2:
        raise ValueError(f"expected masks (..., H, W), got {getattr(masks, 'shape', type(masks).__name__)}")
    average = masks.float().reshape(-1, *masks.shape[-2:]).mean(0)
    peak = float(average.max())
    return average / peak if peak > 0 else average


def centre_concentration(bias_map: Tensor, window: float = 0.5) -> float:
    """The share of a centre-bias map's mass inside the central window whose sides are ``window``
    of the map's: 1.0 when every mask lies there, about ``window ** 2`` for masks spread evenly."""
    if not isinstance(bias_map, Tensor) or bias_map.dim() != 2:
        raise ValueError(f"expected a centre-bias map (H, W), got {getattr(bias_map, 'shape', type(bias_map).__name__)}")
    if not 0 < window <= 1:
        raise ValueError(f"window must be a fraction of the side in (0, 1], got {window}")
    height, width = bias_map.shape
    rows, cols = round(height * window), round(width * window)
    top, left = (height - rows) // 2, (width - cols) // 2
    total = float(bias_map.sum())
    return float(bias_map[top:top + rows, left:left + cols].sum()) / total if total > 0 else float("nan")


# ---------------------------------------------------------------------------------------------
# The dataset


class VosWorld(Dataset):
    """A rendered VOS world: item ``i`` is a dict of ``clip`` (3, T, S, S) float in [0, 1],
    ``masks`` (T, S, S) float {0, 1} (the training label: weak in imagenetvid's train split),
    ``exact_masks`` (T, S, S), ``flow`` (2, T-1, S, S) in pixels per frame and ``flow_image``
    (3, T-1, S, S), the HSV encoding at the world's fixed :attr:`max_magnitude`.

    Clips and masks are held as uint8, flow as float16 (0.01 px at 16 px of motion).
    """

    def __init__(self, name: str, split: str, config: dict[str, Any], data: Tensor, masks: Tensor,
                 exact_masks: Tensor, flow: Tensor, meta: pd.DataFrame, cache_path: Path | None = None,
                 from_cache: bool = False) -> None:
        self.name, self.split, self.config = name, split, config
        self.data, self.masks, self.exact_masks, self.flow = data, masks, exact_masks, flow
        self.meta = meta
        self.description = VOS_WORLDS[name]
        self.max_magnitude = max_magnitude(name, config["size"])
        self.cache_path, self.from_cache = cache_path, from_cache

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        flow = self.flow[index].float()
        image = _flow.flow_to_image(flow.transpose(0, 1), self.max_magnitude).transpose(0, 1)
        return {
            "clip": self.data[index].float().div_(255.0),
            "masks": self.masks[index].float(),
            "exact_masks": self.exact_masks[index].float(),
            "flow": flow,
            "flow_image": image,
        }

    def clips(self, index: slice | Tensor | list[int] = slice(None)) -> Tensor:
        """A batch (B, 3, T, S, S) of float clips in [0, 1] (all clips by default)."""
        return self.data[index].float().div_(255.0)

    def object_path(self, indices: np.ndarray | list[int] | None = None) -> Tensor:
        """The foreground's latent centre (B, T, 2), in image pixels (x, y)."""
        rows = np.arange(len(self)) if indices is None else np.asarray(indices)
        x, y = (linear_path(self.meta[f"{a}_start"].to_numpy(), self.meta[f"{a}_end"].to_numpy(), rows,
                            self.config["frames"]) for a in ("x", "y"))
        return torch.stack([x, y], -1)

    def centre_bias(self, exact: bool = False) -> Tensor:
        """The centre-bias map (S, S) of the training masks (or of the exact ones)."""
        return centre_bias(self.exact_masks if exact else self.masks)

    def __repr__(self) -> str:
        _, _, frames, size, _ = self.data.shape
        return (f"VosWorld({self.name!r}, split={self.split!r}, n={len(self)}, frames={frames}, size={size}, "
                f"flow={self.config['flow']!r})")


def _render(config: dict[str, Any], progress: bool) -> dict[str, Any]:
    name, split, n, frames, size = (config[k] for k in ("world", "split", "n", "frames", "size"))
    rng = split_rng(f"vos/{name}", split, config["seed"])
    meta = sample_latents(rng, name, split, n, frames, size)
    pad = scene_padding(name, frames, size)
    with_flow = config["flow"] in ("exact", "estimated")
    if config["flow"] == "estimated":  # its own stream, so the clips are the same under every flow
        flow_seeds = split_rng(f"vos/{name}/flow", split, config["seed"]).integers(0, 2**62, size=n)
    masks = torch.empty((n, frames, size, size), dtype=torch.uint8)
    labels = masks
    weak = bool((np.asarray(meta["label_kind"]) != "exact").any())
    if weak:
        labels = torch.empty_like(masks)
    flow = torch.empty((n, 2, frames - 1, size, size), dtype=torch.float16) if with_flow else None

    def draw(indices: np.ndarray) -> Tensor:
        clips, mask, exact_flow = draw_clips(meta, indices, frames, size, pad, with_flow=with_flow)
        masks[indices] = mask.to(torch.uint8)
        if weak:
            labels[indices] = _training_masks(mask, meta, indices, frames, size).to(torch.uint8)
        if exact_flow is not None:
            if config["flow"] == "estimated":
                exact_flow = torch.stack([degrade_flow(f, int(flow_seeds[i])) for f, i in zip(exact_flow, indices)])
            flow[indices] = exact_flow.to(torch.float16)
        return clips

    data = render_chunks(n, frames, size, rng, draw, meta["noise"], progress, f"{name}/{split}")
    if flow is None:
        with single_thread():
            flow = estimate_flow(data).to(torch.float16)
    return {"config": config, "clips": data, "masks": labels, "exact_masks": masks, "flow": flow, "meta": meta}


def cache_path(config: dict[str, Any]) -> Path:
    """Where a world's cache entry lives (keyed by its configuration and this code)."""
    keyed = dict(config)
    if config["flow"] == "estimated":  # the errors in force, even when not the defaults
        keyed["flow_errors"] = asdict(ESTIMATED_FLOW)
    key = _cache.config_key(keyed, base, render, appearance, _flow, sys.modules[__name__])
    stem = f"vos-{config['world']}-{config['split']}-n{config['n']}-{config['frames']}x{config['size']}-{key}"
    return _cache.cache_dir("worlds") / f"{stem}.pt"


def make(name: str, split: str, n: int, frames: int | None = None, size: int = 32, seed: int = 0,
         flow: str = "estimated", cache: bool = True, progress: bool = False) -> VosWorld:
    """Render (or read from the cache) ``n`` clips of VOS world ``name`` for ``split``.

    ``frames`` defaults to the world's clip length (8; 16 for tao). ``flow`` is ``"estimated"``
    (the exact flow with estimator-like errors, :data:`ESTIMATED_FLOW`), ``"exact"`` (from the
    latents) or ``"farneback"`` (estimated on the rendered uint8 frames). The same arguments
    give identical tensors; train and val draw from disjoint random streams. With ``cache`` the
    rendered world is stored under ``stdyn.data.cache.cache_dir("worlds")``, keyed by the
    configuration and the source of the code that draws it.
    """
    settings = _check(name, split, n, frames, size, seed, flow)
    config = {"world": name, "split": split, "n": int(n), "frames": int(frames or settings.frames),
              "size": int(size), "seed": int(seed), "flow": flow, "format": CACHE_FORMAT}
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
    return VosWorld(name, split, config, payload["clips"], payload["masks"], payload["exact_masks"],
                    payload["flow"], meta, cache_path=path, from_cache=from_cache)
