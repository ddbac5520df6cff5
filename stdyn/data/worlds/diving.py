"""``diving48``: an articulated diver goes through a class-specific sequence of three poses."""
from __future__ import annotations

import itertools
import sys

import numpy as np
import torch
from torch import Tensor

from . import appearance, render
from .base import Generated, WorldSpec, as_tensor, linear_path, register, render_chunks, sample_labels

# Joint angles in degrees (shoulder, elbow, hip, knee) of a figure seen from the side.
# Shoulder 0 = arm along the body, 180 = overhead; hip 0 = legs in line with the torso.
POSES: dict[str, tuple[float, float, float, float]] = {
    "straight": (180.0, 0.0, 0.0, 0.0),
    "pike": (110.0, 0.0, 125.0, 0.0),
    "tuck": (70.0, 110.0, 135.0, 150.0),
    "open": (90.0, 0.0, 0.0, 0.0),
    "arch": (215.0, 0.0, -40.0, 40.0),
    "sit": (20.0, 0.0, 90.0, 90.0),
}
POSE_NAMES = tuple(POSES)
POSE_ANGLES = torch.tensor(list(POSES.values())).deg2rad()  # (poses, 4)

# Segment lengths and thicknesses as fractions of the body length.
TORSO, NECK, HEAD = 0.34, 0.13, 0.1
UPPER_ARM, FOREARM, THIGH, SHIN = 0.17, 0.15, 0.22, 0.22
TORSO_WIDTH, LIMB_WIDTH = 0.1, 0.07
HOLD = 0.1  # fraction of the clip spent holding each key pose at either side of a transition


def _dive_classes() -> tuple[tuple[int, int, int], ...]:
    """Twelve pose sets; eight in one order, four in both orders (sixteen classes).

    The four pairs that share their poses differ only in the order of the poses, so an
    order-free model can tell them apart at chance only.
    """
    rng = np.random.default_rng(48)
    combos = list(itertools.combinations(range(len(POSES)), 3))
    chosen = [tuple(int(p) for p in rng.permutation(combos[i])) for i in rng.permutation(len(combos))[:12]]
    once, both = chosen[:8], chosen[8:]
    return tuple(once) + tuple(seq for forward in both for seq in (forward, forward[::-1]))


CLASS_POSES = np.asarray(_dive_classes())  # (classes, 3) pose indices
CLASSES = tuple(">".join(POSE_NAMES[p] for p in seq) for seq in CLASS_POSES)


def _smoothstep(x: Tensor) -> Tensor:
    x = x.clamp(0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def pose_path(sequence: Tensor, midpoint: Tensor, frames: int) -> Tensor:
    """Joint angles (B, T, 4) easing from the first key pose to the second (held around
    ``midpoint``) and on to the third. Playing a clip backwards gives the reversed sequence
    with midpoint ``1 - midpoint``, so the timing is symmetric in time."""
    time = torch.linspace(0.0, 1.0, frames)[None, :, None]
    mid = midpoint[:, None, None]
    first, second, third = (POSE_ANGLES[sequence[:, k]][:, None, :] for k in range(3))
    into_second = _smoothstep((time - HOLD) / (mid - 2 * HOLD))
    into_third = _smoothstep((time - mid - HOLD) / (1.0 - mid - 2 * HOLD))
    return first + (second - first) * into_second + (third - second) * into_third


def figure_distance(size: int, cx: Tensor, cy: Tensor, body: Tensor, rotation: Tensor, joints: Tensor) -> Tensor:
    """Signed distance (B, T, S*S), in pixels, to a stick figure whose torso centre is at
    (cx, cy), whose torso is turned by ``rotation`` from upright and whose joint angles are
    ``joints`` (B, T, 4); ``body`` (B,) is its length in pixels."""
    length = body[:, None]
    shoulder_flex, elbow_flex, hip_flex, knee_flex = joints.unbind(-1)
    torso = rotation - np.pi / 2  # image y points down, so upright is -pi/2

    def reach(origin: tuple[Tensor, Tensor], angle: Tensor, fraction: float) -> tuple[Tensor, Tensor]:
        return origin[0] + fraction * length * angle.cos(), origin[1] + fraction * length * angle.sin()

    shoulder = reach((cx, cy), torso, 0.5 * TORSO)
    hip = reach((cx, cy), torso + np.pi, 0.5 * TORSO)
    head = reach(shoulder, torso, NECK)
    upper_arm, thigh = torso + np.pi - shoulder_flex, torso + np.pi - hip_flex
    elbow = reach(shoulder, upper_arm, UPPER_ARM)
    hand = reach(elbow, upper_arm - elbow_flex, FOREARM)
    knee = reach(hip, thigh, THIGH)
    foot = reach(knee, thigh + knee_flex, SHIN)
    # Segments: torso, upper arm, forearm, thigh, shin, and the head as a zero-length segment.
    starts = [hip, shoulder, elbow, hip, knee, head]
    ends = [shoulder, elbow, hand, knee, foot, head]
    distance = render.segment_distance(
        render.homogeneous_grid(size),
        *(torch.stack([point[k] for point in points], -1) for points in (starts, ends) for k in (0, 1)),
    )  # (B, T, 6, S*S)
    radius = torch.stack([
        (TORSO_WIDTH * body).clamp(min=0.8),
        *[(LIMB_WIDTH * body).clamp(min=0.6)] * 4,
        HEAD * body,
    ], -1)  # (B, 6)
    return distance.sub_(radius[:, None, :, None]).amin(2)


def diving48(rng: np.random.Generator, split: str, n: int, frames: int, size: int,
             long_tail: float | None, progress: bool) -> Generated:
    """Diving48 stand-in: a stick-figure diver turns through three key poses (straight, pike,
    tuck, open, arch, sit); the class is the sequence of poses.

    The poses differ between classes, so a single frame (one pose at some rotation) reveals
    much of the class and the set of frames reveals the pose set; eight of the sixteen
    classes come in four pairs with the same poses in reverse order, which only the order
    of the frames separates. The turn (a half somersault either way), drift, body size, diver
    colour and scene are drawn independently of the label.
    """
    labels = sample_labels(rng, n, len(CLASSES), long_tail)
    sequences = CLASS_POSES[labels]
    look = appearance.sample(rng, n)
    centre_x, centre_y = rng.uniform(0.42, 0.58, (2, n)) * size
    drift, heading = rng.uniform(0.0, 0.1, n) * size, rng.uniform(0.0, 2 * np.pi, n)
    # A half somersault either way about a roughly upright mid-clip orientation: symmetric in
    # time, so the orientation of a pose says nothing about when it happens.
    mid_rotation = rng.uniform(-np.pi / 3, np.pi / 3, n)
    turn = rng.uniform(0.3 * np.pi, 0.8 * np.pi, n) * rng.choice([-1.0, 1.0], n)
    meta = {
        "poses": np.asarray(CLASSES)[labels],
        "pose_set": np.asarray(["+".join(sorted(POSE_NAMES[p] for p in seq)) for seq in sequences]),
        **look,
        "midpoint": rng.uniform(0.4, 0.6, n),
        "body_length": rng.uniform(0.55, 0.65, n) * size,
        "rotation_start": mid_rotation - 0.5 * turn,
        "rotation_end": mid_rotation + 0.5 * turn,
        "x_start": centre_x - 0.5 * drift * np.cos(heading),
        "x_end": centre_x + 0.5 * drift * np.cos(heading),
        "y_start": centre_y - 0.5 * drift * np.sin(heading),
        "y_end": centre_y + 0.5 * drift * np.sin(heading),
    }

    def draw(indices: np.ndarray) -> Tensor:
        joints = pose_path(torch.as_tensor(sequences[indices]), as_tensor(meta["midpoint"], indices), frames)
        distance = figure_distance(
            size,
            linear_path(meta["x_start"], meta["x_end"], indices, frames),
            linear_path(meta["y_start"], meta["y_end"], indices, frames),
            as_tensor(meta["body_length"], indices),
            linear_path(meta["rotation_start"], meta["rotation_end"], indices, frames),
            joints,
        )
        main, _ = appearance.object_colours(meta, indices)
        clips = render.composite(appearance.scene(meta, indices, size), main, render.coverage(distance))
        return appearance.finish(clips, meta, indices)

    return Generated(render_chunks(n, frames, size, rng, draw, meta["noise"], progress, f"diving48/{split}"),
                     labels, meta)


register(WorldSpec("diving48", CLASSES, diving48, sys.modules[__name__]))
