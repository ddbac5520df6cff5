"""Appearance as a nuisance: every clip's look drawn from a broad, continuous distribution.

Natural video shows every motion in countless appearances; a network trained on it keeps
recognising a motion when a clip is restyled. The worlds give their networks the same variety
(domain randomisation, as in Tobin et al. 2017): the scene's two colours, the object's colour and
its second (texture) colour are drawn from all of HSV, with the object lighter or darker than the
scene; scene and object carry procedural textures; up to :data:`MAX_CLUTTER` static shapes clutter
the scene; and lighting, contrast, blur and sensor noise vary from clip to clip.

Everything here is drawn independently of the label. Where a world's frames should reveal the
class (``kinetics``), it does so through a :func:`layout`, a structure that survives recolouring
and stylization.

Clips are built as ``finish(draw_objects(scene(...)))``: the scene (pattern, clutter, layout) is
static, the object moves over it, and lighting, contrast and blur are one spatial transform per
clip, the same for every frame, so they never change the motion and are symmetric in time.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from . import render

SCENE_PATTERNS: tuple[str, ...] = ("flat", "gradient", "stripes", "checker", "blobs")
OBJECT_TEXTURES: tuple[str, ...] = ("solid", "stripes", "split", "checker", "ring")
LAYOUTS: tuple[str, ...] = (
    "bar_top", "bar_bottom", "pole_left", "pole_right", "diagonal_down",
    "diagonal_up", "frame", "ring", "corners", "cross",
)
MAX_CLUTTER = 2
MIN_OBJECT_GAP = 0.3  # least difference in luma between the object and its scene
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
OBJECT_SATURATION_POWER = 0.5  # objects lean towards saturated colours
NOISE_RANGE = (0.01, 0.03)  # per-pixel sensor noise, standard deviation


def hsv_to_rgb(hue: Tensor, saturation: Tensor, value: Tensor) -> Tensor:
    """RGB (..., 3) from hue, saturation and value tensors in [0, 1] (hue wraps)."""
    k = torch.stack([torch.full_like(hue, 5.0), torch.full_like(hue, 3.0), torch.full_like(hue, 1.0)], -1)
    k = torch.remainder(k + 6.0 * hue[..., None], 6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)
    return value[..., None] * (1.0 - saturation[..., None] * ramp)


def _colour(meta: dict[str, np.ndarray], prefix: str, indices: np.ndarray) -> Tensor:
    """The (B, 3) RGB colour stored as ``{prefix}_hue/_saturation/_value`` in meta."""
    hsv = [torch.as_tensor(meta[f"{prefix}_{part}"][indices], dtype=torch.float32)
           for part in ("hue", "saturation", "value")]
    return hsv_to_rgb(*hsv)


def _away_from(rng: np.random.Generator, value: np.ndarray, gap_range: tuple[float, float]) -> np.ndarray:
    """Values at a random gap from ``value``, above or below at random (where both fit in
    [0.05, 1]; otherwise on the side with room, with the gap cut to the room there)."""
    n = len(value)
    gap = rng.uniform(*gap_range, n)
    room_up, room_down = 1.0 - value, value - 0.05
    up = rng.random(n) < 0.5
    up = np.where(room_up < gap, room_up >= room_down, up)
    up = np.where(room_down < gap, room_up >= room_down, up)
    gap = np.minimum(gap, np.where(up, room_up, room_down))
    return np.where(up, value + gap, value - gap)


def hue_luma(hue: np.ndarray) -> np.ndarray:
    """Luma (Rec. 601) of the fully saturated, full-value colour of each hue."""
    rgb = hsv_to_rgb(torch.as_tensor(hue, dtype=torch.float64), torch.ones(len(hue), dtype=torch.float64),
                     torch.ones(len(hue), dtype=torch.float64))
    return (rgb @ torch.tensor(LUMA_WEIGHTS, dtype=torch.float64)).numpy()


def colours_of_luma(rng: np.random.Generator, luma: np.ndarray, prefix: str, saturation_power: float = 0.7,
                    hue: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Random colours (``{prefix}_hue/_saturation/_value``) of any hue (or the given ``hue``) with
    the given luma: the saturation is drawn at random and lowered where that hue at that
    saturation cannot be as bright as asked (a saturated blue is never light)."""
    n = len(luma)
    hue = rng.random(n) if hue is None else np.asarray(hue, dtype=np.float64)
    # luma(h, s, v) = v * (1 - s * (1 - luma of the pure hue)), so v = luma / (1 - s * (1 - pure)).
    pure = hue_luma(hue)
    saturation = np.minimum(rng.uniform(0.0, 1.0, n) ** saturation_power, (1.0 - luma) / (1.0 - pure))
    value = luma / (1.0 - saturation * (1.0 - pure))
    return {f"{prefix}_hue": hue, f"{prefix}_saturation": saturation, f"{prefix}_value": np.clip(value, 0.0, 1.0)}


def sample(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Appearance latents of ``n`` clips (one row each; see the module docstring).

    Brightness is set as luma, so that the object always differs from the scene in luminance
    (by at least :data:`MIN_OBJECT_GAP`), either lighter or darker; the scene's second colour and
    the clutter differ from the scene by less, so the object stays the most salient thing in a
    frame whatever its hue.
    """
    scene_luma = rng.uniform(0.1, 0.85, n)
    object_luma = _away_from(rng, scene_luma, (MIN_OBJECT_GAP, 0.65))
    meta: dict[str, np.ndarray] = {
        "scene_luma": scene_luma,
        "object_luma": object_luma,
        **colours_of_luma(rng, scene_luma, "scene"),
        **colours_of_luma(rng, np.clip(scene_luma + rng.uniform(-0.12, 0.12, n), 0.03, 0.97), "scene2"),
        "pattern": np.asarray(SCENE_PATTERNS)[rng.integers(0, len(SCENE_PATTERNS), n)],
        "scene_phase": rng.uniform(0.0, 2 * np.pi, n),
        "scene_angle": rng.uniform(0.0, np.pi, n),
        "scene_frequency": rng.uniform(1.0, 4.0, n),
        "scene_angle2": rng.uniform(0.0, np.pi, n),
        "scene_phase2": rng.uniform(0.0, 2 * np.pi, n),
        **colours_of_luma(rng, object_luma, "object", OBJECT_SATURATION_POWER),
        # The texture's second colour stays on the object's side of the scene.
        **colours_of_luma(rng, object_luma + 0.5 * (scene_luma - object_luma) * rng.uniform(0.0, 1.0, n), "object2"),
        "object_texture": np.asarray(OBJECT_TEXTURES)[rng.integers(0, len(OBJECT_TEXTURES), n)],
        "texture_frequency": rng.uniform(1.0, 2.5, n),
        "clutter": rng.integers(0, MAX_CLUTTER + 1, n),
        "light_angle": rng.uniform(0.0, 2 * np.pi, n),
        "light_strength": rng.uniform(0.0, 0.25, n),
        "contrast": rng.uniform(0.75, 1.15, n),
        "blur": rng.uniform(0.0, 0.15, n),  # weight of each neighbour in a 3-tap blur
        "noise": rng.uniform(*NOISE_RANGE, n),
    }
    for k in range(MAX_CLUTTER):
        meta[f"clutter{k}_shape"] = rng.integers(0, len(render.SHAPES), n)
        meta[f"clutter{k}_x"], meta[f"clutter{k}_y"] = rng.uniform(0.1, 0.9, (2, n))
        meta[f"clutter{k}_radius"] = rng.uniform(0.06, 0.12, n)
        meta[f"clutter{k}_angle"] = rng.uniform(0.0, 2 * np.pi, n)
        meta.update(colours_of_luma(rng, np.clip(scene_luma + rng.uniform(-0.15, 0.15, n), 0.03, 0.97),
                                    f"clutter{k}"))
    return meta


def sample_layout(rng: np.random.Generator, layout: np.ndarray, scene_luma: np.ndarray) -> dict[str, np.ndarray]:
    """Latents of a structural layout (indices into :data:`LAYOUTS`) drawn into each scene:
    its own colour, clearly lighter or darker than the scene, and small jitters of its geometry."""
    n = len(layout)
    return {
        "layout": np.asarray(LAYOUTS)[layout],
        **colours_of_luma(rng, _away_from(rng, scene_luma, (0.2, 0.45)), "layout"),
        "layout_shift": rng.uniform(-0.05, 0.05, n),
        "layout_width": rng.uniform(0.09, 0.13, n),
    }


def _pattern_mix(meta: dict[str, np.ndarray], indices: np.ndarray, size: int) -> Tensor:
    """Where the scene shows its second colour, (B, S, S) in [0, 1]."""
    x, y = render.pixel_grid(size)
    x, y = x / size, y / size
    angle = torch.as_tensor(meta["scene_angle"][indices], dtype=torch.float32)[:, None, None]
    angle2 = torch.as_tensor(meta["scene_angle2"][indices], dtype=torch.float32)[:, None, None]
    phase = torch.as_tensor(meta["scene_phase"][indices], dtype=torch.float32)[:, None, None]
    phase2 = torch.as_tensor(meta["scene_phase2"][indices], dtype=torch.float32)[:, None, None]
    wave = 2 * math.pi * torch.as_tensor(meta["scene_frequency"][indices], dtype=torch.float32)[:, None, None]
    along = x * angle.cos() + y * angle.sin()
    across = -x * angle.sin() + y * angle.cos()
    other = x * angle2.cos() + y * angle2.sin()
    pattern = np.asarray(meta["pattern"])[indices]
    kinds = {
        "flat": torch.zeros_like(along),
        "gradient": (along - along.amin((1, 2), keepdim=True))
        / (along.amax((1, 2), keepdim=True) - along.amin((1, 2), keepdim=True) + 1e-6),
        "stripes": 0.5 + 0.5 * torch.sin(wave * along + phase),
        "checker": 0.5 + 0.5 * torch.tanh(4 * torch.sin(wave * along + phase) * torch.sin(wave * across + phase)),
        # smooth procedural noise: three waves at unrelated angles and phases
        "blobs": 0.5 + (torch.sin(wave * along + phase) + torch.sin(1.3 * wave * other + phase2)
                        + torch.sin(0.8 * wave * across + phase + phase2)) / 6,
    }
    mix = torch.zeros_like(along)
    for name, values in kinds.items():
        rows = torch.as_tensor(pattern == name)
        mix = torch.where(rows[:, None, None], values, mix)
    return mix


def _layout_coverage(meta: dict[str, np.ndarray], indices: np.ndarray, size: int) -> Tensor:
    """Soft coverage (B, S, S) of each clip's layout (zero where a clip has none)."""
    x, y = (c / size for c in render.pixel_grid(size))
    names = meta.get("layout")
    batch = len(indices)
    if names is None:
        return torch.zeros(batch, size, size)
    names = np.asarray(names)[indices]
    shift = torch.as_tensor(meta["layout_shift"][indices], dtype=torch.float32)[:, None, None]
    width = torch.as_tensor(meta["layout_width"][indices], dtype=torch.float32)[:, None, None]

    def band(distance: Tensor) -> Tensor:  # soft band of half-width ``width`` (distances in frame units)
        return render.coverage((distance - 0.5 * width) * size)

    centre = 0.5 + shift
    ring = ((x - centre) ** 2 + (y - centre) ** 2).sqrt()
    border = torch.minimum(torch.minimum(x, 1 - x), torch.minimum(y, 1 - y))
    corner = torch.minimum(((x - 0.15 - shift) ** 2 + (y - 0.15) ** 2).sqrt(),
                           ((x - 0.85 + shift) ** 2 + (y - 0.15) ** 2).sqrt())
    shapes = {
        "bar_top": band((y - 0.22 - shift).abs()),
        "bar_bottom": band((y - 0.78 - shift).abs()),
        "pole_left": band((x - 0.22 - shift).abs()),
        "pole_right": band((x - 0.78 - shift).abs()),
        "diagonal_down": band((x - y - 2 * shift).abs() / math.sqrt(2)),
        "diagonal_up": band((x + y - 1 - 2 * shift).abs() / math.sqrt(2)),
        "frame": band((border - 0.08).abs()),
        "ring": band((ring - 0.3).abs()),
        "corners": render.coverage((corner - 1.2 * width) * size),
        "cross": torch.maximum(band((x - centre).abs()), band((y - centre).abs())),
    }
    cover = torch.zeros(batch, size, size)
    for name, values in shapes.items():
        rows = torch.as_tensor(names == name)
        cover = torch.where(rows[:, None, None], values.expand(batch, size, size), cover)
    return cover


def scene(meta: dict[str, np.ndarray], indices: np.ndarray, size: int) -> Tensor:
    """Static scenes (B, 3, S, S): a two-colour pattern, then the layout, then the clutter shapes."""
    first, second = _colour(meta, "scene", indices), _colour(meta, "scene2", indices)
    mix = _pattern_mix(meta, indices, size)[:, None]
    out = first[:, :, None, None] + (second - first)[:, :, None, None] * mix
    if "layout" in meta:
        cover = _layout_coverage(meta, indices, size)[:, None]
        out = out + (_colour(meta, "layout", indices)[:, :, None, None] - out) * cover
    count = torch.as_tensor(meta["clutter"][indices])
    for k in range(MAX_CLUTTER):
        present = (count > k).float()
        if not present.any():
            continue

        def column(name: str) -> Tensor:
            return torch.as_tensor(meta[f"clutter{k}_{name}"][indices], dtype=torch.float32)[:, None]

        _, cover = render.draw_objects(
            torch.zeros(len(indices), 3, size, size), torch.as_tensor(meta[f"clutter{k}_shape"][indices]),
            torch.zeros(len(indices), 3),
            column("x") * size, column("y") * size, column("radius") * size, column("angle"), present[:, None],
        )
        out = out + (_colour(meta, f"clutter{k}", indices)[:, :, None, None] - out) * cover[:, 0, None]
    return out.clamp_(0.0, 1.0)


def object_colours(meta: dict[str, np.ndarray], indices: np.ndarray) -> tuple[Tensor, Tensor]:
    """The object's main and second (texture) colours, each (B, 3)."""
    return _colour(meta, "object", indices), _colour(meta, "object2", indices)


def texture_mix(meta: dict[str, np.ndarray], indices: np.ndarray, u: Tensor, v: Tensor) -> Tensor:
    """Where the object shows its second colour (B, ...) in [0, 1], in object-local coordinates
    (so the texture moves, turns and scales with the object)."""
    kinds = np.asarray(meta["object_texture"])[indices]
    frequency = torch.as_tensor(meta["texture_frequency"][indices], dtype=torch.float32)
    frequency = frequency.view(-1, *([1] * (u.dim() - 1)))
    wave = math.pi * frequency
    options = {
        "stripes": (0.5 + 2.0 * torch.sin(wave * u)).clamp(0.0, 1.0),
        "split": (0.5 + 4.0 * v).clamp(0.0, 1.0),
        "checker": (0.5 + 2.0 * torch.sin(wave * u) * torch.sin(wave * v)).clamp(0.0, 1.0),
        "ring": (0.5 + 4.0 * ((u * u + v * v).sqrt() - 0.55)).clamp(0.0, 1.0),
    }
    mix = torch.zeros_like(u)
    for name, values in options.items():
        rows = torch.as_tensor(kinds == name).view(-1, *([1] * (u.dim() - 1)))
        mix = torch.where(rows, values, mix)
    return mix


def finish(clips: Tensor, meta: dict[str, np.ndarray], indices: np.ndarray) -> Tensor:
    """Lighting (a linear gradient of illumination), contrast about the clip's mean and a slight
    blur, one spatial transform per clip applied to every frame: (B, 3, T, S, S) in [0, 1]."""
    size = clips.shape[-1]
    x, y = (c / size - 0.5 for c in render.pixel_grid(size))
    angle = torch.as_tensor(meta["light_angle"][indices], dtype=torch.float32)[:, None, None]
    strength = torch.as_tensor(meta["light_strength"][indices], dtype=torch.float32)[:, None, None]
    light = 1.0 + 2.0 * strength * (x * angle.cos() + y * angle.sin())  # (B, S, S)
    out = clips * light[:, None, None]
    contrast = torch.as_tensor(meta["contrast"][indices], dtype=torch.float32).view(-1, 1, 1, 1, 1)
    mean = out.mean((1, 2, 3, 4), keepdim=True)
    out = mean + contrast * (out - mean)
    weight = torch.as_tensor(meta["blur"][indices], dtype=torch.float32).view(-1, 1, 1, 1, 1)
    for dim in (-1, -2):
        before = torch.cat([out.narrow(dim, 0, 1), out.narrow(dim, 0, size - 1)], dim)
        after = torch.cat([out.narrow(dim, 1, size - 1), out.narrow(dim, size - 1, 1)], dim)
        out = (1 - 2 * weight) * out + weight * (before + after)
    return out.clamp_(0.0, 1.0)
