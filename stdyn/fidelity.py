"""How much of the object and its motion survives each style, and how unrelated the styles are.

A dynamic pair shows one clip in two styles, so every style must keep the object and its motion
while changing the clip's appearance. This module puts figures on both, from plain tensors:
clips (B, 3, T, S, S) in [0, 1], the object's coverage (B, T, S, S) and its exact forward flow
(B, 2, T - 1, S, S) in pixels.

- **visibility** (:func:`visibility`): how well the object's outline stands out from the scene
  around it. Each pixel gets a local colour contrast (per channel, the maximum minus the minimum
  of its 3x3 neighbourhood; the root of the summed squares), which is high on a step edge and on
  a thin line alike. Visibility is the probability that a pixel on the object's boundary has a
  higher local contrast than a pixel of the ring of scene around the object (the area under the
  ROC curve of that one-number outline detector): 0.5 means the outline cannot be told from the
  scene, 1 that every boundary pixel beats every scene pixel. It ignores what fills the object,
  so it means the same for a style that keeps only outlines and for one that keeps regions.
- **motion survival** (:func:`flow_agreement`): Farneback optical flow estimated on the clip
  against the exact flow on the pixels that move: the mean cosine of the angle between the two
  vectors (0 where the estimate is next to zero) and the mean end-point error in pixels.
- **decorrelation** (:func:`decorrelation`): per-clip statistics of the same clips in two styles
  (:data:`STATISTICS`) and their Pearson correlation over clips.

:func:`fidelity` reports visibility and motion survival for the clean clips and in each style,
with their ratio to the clean clips; :data:`KEPT` holds the ratios every style must reach.
:func:`probe_clips` draws varied moving-object clips with exact masks and flow to run them on.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from stdyn.flow import farneback
from stdyn.stylize import STYLES, _sobel_magnitude, blur_frames, detail_share, luma, stylize

STATISTICS: tuple[str, ...] = ("mean_red", "mean_green", "mean_blue", "detail_share", "luma_gradient")
"""Per-clip statistics of :func:`clip_statistics`: the mean of each colour channel, the share of
luma variance in fine detail (:func:`stdyn.stylize.detail_share`, the texture statistic the styles
decorrelate) and the mean Sobel gradient magnitude of luma (how much structure a clip shows, which
every style keeps, so it stays correlated across styles)."""
DECORRELATED: tuple[str, ...] = ("mean_red", "mean_green", "mean_blue", "detail_share")
"""The statistics on which any two styles must be unrelated (|r| at most :data:`MAX_ABS_R`)."""
MAX_ABS_R = 0.1
MOVING_PX = 0.5  # exact flow at least this long (pixels per frame) counts as moving
STILL_PX = 0.1  # estimated flow shorter than this counts as no motion (Farneback leaves such traces)
KEPT = {
    16: {"visibility": 0.85, "flow_cosine": 0.7},
    32: {"visibility": 0.9, "flow_cosine": 0.93},
    64: {"visibility": 0.9, "flow_cosine": 0.93},
}
"""The least ratio to the clean clips that every style keeps, by frame size (pixels). At 16 px an
object is 3-6 pixels across and a line drawing of it carries less of its motion for Farneback
flow; on the probe clips the styles keep >= 0.93 of visibility at every size and >= 0.8 (16 px),
>= 0.97 (32 and 64 px) of the flow cosine."""


def probe_clips(n: int, *, frames: int = 8, size: int = 32, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Varied clips of one moving object, with its coverage and its exact forward flow.

    Returns clips (n, 3, T, S, S) in [0, 1], object coverage (n, T, S, S) in [0, 1] and flow
    (n, 2, T - 1, S, S) in pixels (dx, dy) wherever the object covers a pixel of frame t, zero
    elsewhere. Per clip: a static scene of two colours anywhere in HSV (flat, gradient, stripes,
    checker or blobs) with 0-3 static clutter shapes; an object (ellipse, box, diamond or
    triangle, radius 3-6 px at 32 px, scaled with ``size``) of any colour, lighter or darker than
    the scene, solid or textured, moving and turning at constant rates; then a lighting
    gradient, contrast, a slight blur and per-pixel sensor noise.
    """
    g = torch.Generator().manual_seed(seed)

    def uniform(low: float, high: float, *shape: int) -> Tensor:
        return low + (high - low) * torch.rand(*shape, generator=g)

    def choice(k: int, *shape: int) -> Tensor:
        return torch.randint(0, k, shape, generator=g)

    scale = size / 32
    centres = torch.arange(size, dtype=torch.float32) + 0.5
    y, x = torch.meshgrid(centres, centres, indexing="ij")

    # The scene: two colours mixed by a pattern.
    scene_value = uniform(0.12, 0.88, n)
    first = _hsv(uniform(0, 1, n), uniform(0, 1, n) ** 0.7, scene_value)
    second = _hsv(uniform(0, 1, n), uniform(0, 1, n) ** 0.7, (scene_value + uniform(-0.25, 0.25, n)).clamp(0.03, 1))
    angle, phase, frequency = uniform(0, math.pi, n), uniform(0, 2 * math.pi, n), uniform(1, 4, n)
    along = (x * angle.cos()[:, None, None] + y * angle.sin()[:, None, None]) / size
    across = (-x * angle.sin()[:, None, None] + y * angle.cos()[:, None, None]) / size
    wave = 2 * math.pi * frequency[:, None, None]
    ph = phase[:, None, None]
    patterns = torch.stack([
        torch.zeros_like(along),
        (along - along.amin((1, 2), keepdim=True))
        / (along.amax((1, 2), keepdim=True) - along.amin((1, 2), keepdim=True)),
        0.5 + 0.5 * torch.sin(wave * along + ph),
        0.5 + 0.5 * torch.tanh(4 * torch.sin(wave * along + ph) * torch.sin(wave * across + ph)),
        0.5 + (torch.sin(wave * along + ph) + torch.sin(1.3 * wave * across + 2 * ph)
               + torch.sin(0.7 * wave * (along + across) + 3 * ph)) / 6,
    ], 1)
    mix = patterns.gather(1, choice(5, n)[:, None, None, None].expand(n, 1, size, size))
    scene = first[:, :, None, None] + (second - first)[:, :, None, None] * mix

    # Static clutter shapes, each of its own colour near the scene's brightness.
    clutter = choice(4, n)
    for k in range(3):
        colour = _hsv(uniform(0, 1, n), uniform(0, 1, n), (scene_value + uniform(-0.3, 0.3, n)).clamp(0.03, 1))
        pose = (uniform(0.1, 0.9, n) * size, uniform(0.1, 0.9, n) * size, uniform(0.07, 0.16, n) * size,
                uniform(0, 2 * math.pi, n))
        cover = _shape_coverage(choice(4, n), *(p[:, None] for p in pose), x, y)[:, 0]
        cover = cover * (clutter > k).float()[:, None, None]
        scene = scene + (colour[:, :, None, None] - scene) * cover[:, None]

    # The object: a colour lighter or darker than the scene, a texture, a straight path.
    gap = uniform(0.3, 0.65, n)
    lighter = torch.rand(n, generator=g) < 0.5
    room_up, room_down = 1 - scene_value, scene_value - 0.05
    lighter = torch.where(room_up < gap, room_up >= room_down, lighter)
    lighter = torch.where(room_down < gap, room_up >= room_down, lighter)
    gap = torch.minimum(gap, torch.where(lighter, room_up, room_down))
    value = torch.where(lighter, scene_value + gap, scene_value - gap)
    hue = uniform(0, 1, n)
    colour = _hsv(hue, uniform(0, 1, n) ** 0.6, value)
    colour2 = _hsv(torch.remainder(hue + uniform(0.15, 0.85, n), 1), uniform(0, 1, n),
                   (value + 0.5 * (scene_value - value) * uniform(0, 1, n)).clamp(0.03, 1))
    radius = uniform(3, 6, n) * scale
    speed = uniform(0.6, 1.6, n) * scale
    heading = uniform(0, 2 * math.pi, n)
    velocity = torch.stack([heading.cos(), heading.sin()], 1) * speed[:, None]
    travel = velocity * (frames - 1)
    margin = radius[:, None] + 1
    low = margin - travel.clamp(max=0)
    high = size - margin - travel.clamp(min=0)
    start = low + torch.rand(n, 2, generator=g) * (high - low).clamp(min=0)
    t = torch.arange(frames, dtype=torch.float32)
    centre = start[:, None] + velocity[:, None] * t[None, :, None]  # (n, T, 2)
    spin = uniform(-0.15, 0.15, n)
    turn = uniform(0, 2 * math.pi, n)[:, None] + spin[:, None] * t  # (n, T)
    shape = choice(4, n)
    cover = _shape_coverage(shape, centre[..., 0], centre[..., 1], radius[:, None].expand(n, frames), turn, x, y)
    u, v = _local(centre[..., 0], centre[..., 1], radius[:, None], turn, x, y)
    texture_frequency = math.pi * uniform(1, 2.5, n)[:, None, None, None]
    textures = torch.stack([
        torch.zeros_like(u),
        (0.5 + 2 * torch.sin(texture_frequency * u)).clamp(0, 1),
        (0.5 + 2 * torch.sin(texture_frequency * u) * torch.sin(texture_frequency * v)).clamp(0, 1),
        (0.5 + 4 * ((u * u + v * v).sqrt() - 0.55)).clamp(0, 1),
        (0.5 + 4 * v).clamp(0, 1),
    ], 1)
    second_mix = textures.gather(1, choice(5, n)[:, None, None, None, None].expand(n, 1, frames, size, size))[:, 0]
    paint = colour[:, :, None, None, None] + (colour2 - colour)[:, :, None, None, None] * second_mix[:, None]
    clips = scene[:, :, None] + (paint - scene[:, :, None]) * cover[:, None]

    # Exact flow: where the object covers a pixel at t, that point's displacement to t + 1.
    rel_x, rel_y = x - centre[:, :-1, 0, None, None], y - centre[:, :-1, 1, None, None]
    cos, sin = spin.cos()[:, None, None, None], spin.sin()[:, None, None, None]
    dx = centre[:, 1:, 0, None, None] + cos * rel_x - sin * rel_y - x
    dy = centre[:, 1:, 1, None, None] + sin * rel_x + cos * rel_y - y
    on = (cover[:, :-1] > 0).float()
    flow = torch.stack([dx * on, dy * on], 1)

    # One lighting, contrast and blur per clip, then sensor noise per frame.
    light_angle = uniform(0, 2 * math.pi, n)[:, None, None]
    light = 1 + 2 * uniform(0, 0.35, n)[:, None, None] * ((x / size - 0.5) * light_angle.cos()
                                                           + (y / size - 0.5) * light_angle.sin())
    clips = clips * light[:, None, None]
    mean = clips.mean((1, 2, 3, 4), keepdim=True)
    clips = mean + uniform(0.65, 1.15, n).view(n, 1, 1, 1, 1) * (clips - mean)
    weight = uniform(0, 0.22, n).view(n, 1, 1, 1)
    taps = torch.stack([weight, 1 - 2 * weight, weight], -1)
    clips = torch.stack([_blur3(clips[:, c], taps) for c in range(3)], 1)
    clips = clips + uniform(0.01, 0.035, n).view(n, 1, 1, 1, 1) * torch.randn(clips.shape, generator=g)
    return clips.clamp_(0, 1), cover, flow


def _blur3(u: Tensor, taps: Tensor) -> Tensor:
    """A 3-tap blur (per-clip taps (B, 1, 1, 1, 3)) along both axes of frames (B, T, H, W)."""
    h, w = u.shape[-2:]
    padded = F.pad(u, (1, 1, 1, 1), mode="replicate")
    rows = sum(taps[..., i] * padded[..., i : i + h, :] for i in range(3))
    return sum(taps[..., i] * rows[..., i : i + w] for i in range(3))


def _hsv(hue: Tensor, saturation: Tensor, value: Tensor) -> Tensor:
    """RGB (B, 3) from HSV (each (B,), hue in turns)."""
    k = torch.remainder(torch.tensor([5.0, 3.0, 1.0]) + 6 * hue[:, None], 6)
    return value[:, None] * (1 - saturation[:, None] * torch.minimum(k, 4 - k).clamp(0, 1))


def _local(cx: Tensor, cy: Tensor, radius: Tensor, angle: Tensor, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Object-local coordinates (radius 1) of the pixel grid, each (B, T, S, S)."""
    cos, sin = angle.cos()[..., None, None], angle.sin()[..., None, None]
    rx, ry = x - cx[..., None, None], y - cy[..., None, None]
    r = radius[..., None, None]
    return (cos * rx + sin * ry) / r, (-sin * rx + cos * ry) / r


def _shape_coverage(shape: Tensor, cx: Tensor, cy: Tensor, radius: Tensor, angle: Tensor, x: Tensor,
                    y: Tensor) -> Tensor:
    """Soft coverage (B, T, S, S) of an ellipse, box, diamond or triangle (``shape`` (B,) 0..3)."""
    u, v = _local(cx, cy, radius, angle, x, y)
    qu, qv = u.abs() - 1.0, v.abs() - 0.55
    distances = torch.stack([
        (torch.sqrt(u**2 + (v / 0.6) ** 2) - 1) * 0.6,
        torch.sqrt(qu.clamp(min=0) ** 2 + qv.clamp(min=0) ** 2) + torch.maximum(qu, qv).clamp(max=0),
        (u.abs() + v.abs() / 0.65 - 1) * 0.65 / math.hypot(1, 0.65),
        torch.maximum(-u - 0.7, (0.8 * u + 1.7 * v.abs() - 0.8) / math.hypot(0.8, 1.7)),
    ], 1)
    distance = distances.gather(1, shape.view(-1, 1, 1, 1, 1).expand(-1, 1, *distances.shape[2:]))[:, 0]
    return (0.5 - distance * radius[..., None, None]).clamp(0, 1)


def clip_statistics(clips: Tensor) -> Tensor:
    """Per-clip statistics (B, 5) of clips (B, 3, T, H, W), in the order of :data:`STATISTICS`."""
    luma_frames = luma(clips)
    return torch.cat([clips.mean((2, 3, 4)), detail_share(luma_frames)[:, None],
                      _sobel_magnitude(luma_frames).mean((1, 2, 3))[:, None]], 1)


def decorrelation(clips: Tensor, styles: Sequence[str] = STYLES, batch_size: int = 256) -> pd.DataFrame:
    """Pearson r over clips of each statistic of :data:`STATISTICS` between every two styles.

    ``clips`` (B, 3, T, H, W) in [0, 1]. Columns: style_a, style_b, statistic, r, and decorrelated
    (whether the statistic is one of :data:`DECORRELATED`). With B clips, r of unrelated
    statistics scatters by about 1 / sqrt(B).
    """
    stats = {style: torch.cat([clip_statistics(stylize(chunk, style)) for chunk in clips.split(batch_size)]).double()
             for style in styles}
    rows = [{"style_a": a, "style_b": b, "statistic": name, "r": _pearson(stats[a][:, k], stats[b][:, k]),
             "decorrelated": name in DECORRELATED}
            for a, b in itertools.combinations(styles, 2) for k, name in enumerate(STATISTICS)]
    return pd.DataFrame(rows)


def _pearson(a: Tensor, b: Tensor) -> float:
    a, b = a - a.mean(), b - b.mean()
    denominator = float(a.norm() * b.norm())
    return float((a * b).sum()) / denominator if denominator > 0 else float("nan")


def local_contrast(clips: Tensor) -> Tensor:
    """Local colour contrast (B, T, H, W) of clips (B, 3, T, H, W): per channel, the maximum minus
    the minimum over each pixel's 3x3 neighbourhood, combined as the root of the summed squares."""
    b, _, t, h, w = clips.shape
    frames = clips.reshape(b * 3 * t, 1, h, w)
    spread = F.max_pool2d(frames, 3, stride=1, padding=1) + F.max_pool2d(-frames, 3, stride=1, padding=1)
    return spread.view(b, 3, t, h, w).pow(2).sum(1).sqrt()


def visibility(clips: Tensor, masks: Tensor) -> Tensor:
    """Per-clip visibility (B,) of the object in clips (B, 3, T, H, W) with coverage ``masks``
    (B, T, H, W): the probability that a pixel of the object's boundary has a higher
    :func:`local_contrast` than a pixel of the scene around it (ties count half).

    Boundary: pixels within one pixel (8-neighbourhood) of the coverage's 0.5 contour, on either
    side. Scene around it: pixels 4 to ``3 + max(2, S / 8)`` pixels outside the object. Frames are
    lightly blurred first (3x3 binomial), so sensor noise counts little. All frames of a clip are
    pooled; a clip without boundary or scene pixels gives NaN.
    """
    b, _, t, h, w = clips.shape
    contrast = local_contrast(blur_frames(clips.reshape(b * 3, t, h, w), (1.0, 2.0, 1.0)).view_as(clips))
    inside = (masks > 0.5).float().reshape(b * t, 1, h, w)
    reach = 3 + max(2, round(min(h, w) / 8))

    def dilate(m: Tensor, r: int) -> Tensor:
        return F.max_pool2d(m, 2 * r + 1, stride=1, padding=r)

    boundary = (dilate(inside, 1) - (1 - dilate(1 - inside, 1))).view(b, t, h, w) > 0.5
    ring = (dilate(inside, reach) - dilate(inside, 3)).view(b, t, h, w) > 0.5
    out = torch.full((b,), float("nan"), dtype=torch.float64)
    for i in range(b):
        edge, scene = contrast[i][boundary[i]], contrast[i][ring[i]].sort().values
        if len(edge) and len(scene):
            below = torch.searchsorted(scene, edge, right=False)
            not_above = torch.searchsorted(scene, edge, right=True)
            out[i] = float((below + not_above).double().mean() / (2 * len(scene)))
    return out


def flow_agreement(clips: Tensor, flow: Tensor, masks: Tensor, **options: float) -> tuple[Tensor, Tensor]:
    """Per-clip agreement (B,) of Farneback flow on ``clips`` (B, 3, T, H, W) with the exact
    ``flow`` (B, 2, T - 1, H, W) on moving pixels (covered by the object at frame t, exact flow at
    least :data:`MOVING_PX` long): the mean cosine of the angle between the vectors (0 where the
    estimate is shorter than :data:`STILL_PX`) and the mean end-point error in pixels.

    ``options`` override the parameters of :func:`stdyn.flow.farneback`, which default here to
    values sized to the frames (pyramid levels, window). Clips without moving pixels give NaN.
    """
    size = min(clips.shape[-2:])
    params = {"levels": 1 if size < 24 else 2 if size < 48 else 3, "winsize": 2 * (size // 8) + 1,
              "iterations": 5, "poly_n": 5, "poly_sigma": 1.1}
    params.update(options)
    cosine = torch.full((len(clips),), float("nan"), dtype=torch.float64)
    error = torch.full((len(clips),), float("nan"), dtype=torch.float64)
    moving = (masks[:, :-1] > 0.5) & (flow.norm(dim=1) >= MOVING_PX)
    for i in range(len(clips)):
        if not moving[i].any():
            continue
        estimate = farneback(clips[i], **params).transpose(0, 1)  # (2, T - 1, H, W)
        est, exact = estimate[:, moving[i]].double(), flow[i][:, moving[i]].double()
        length = est.norm(dim=0)
        cos = torch.where(length >= STILL_PX, (est * exact).sum(0) / (length * exact.norm(dim=0)).clamp(min=1e-12),
                          torch.zeros_like(length))
        cosine[i], error[i] = float(cos.mean()), float((est - exact).norm(dim=0).mean())
    return cosine, error


def fidelity(clips: Tensor, masks: Tensor, flow: Tensor, styles: Sequence[str] = STYLES,
             **options: float) -> pd.DataFrame:
    """Visibility and motion survival of the object, for the clean clips and in each style.

    ``clips`` (B, 3, T, S, S) in [0, 1], ``masks`` (B, T, S, S) the object's coverage, ``flow``
    (B, 2, T - 1, S, S) its exact forward flow in pixels; ``options`` go to :func:`flow_agreement`.
    Columns: style ("clean" first, then ``styles``), metric (visibility, flow_cosine,
    flow_error), value (the mean over clips) and ratio (value over the clean clips' value; for
    flow_error, a ratio above 1 is worse).
    """
    _check(clips, masks, flow)
    rows = []
    for style in ("clean", *styles):
        styled = clips if style == "clean" else stylize(clips, style)
        cosine, error = flow_agreement(styled, flow, masks, **options)
        values = {"visibility": visibility(styled, masks), "flow_cosine": cosine, "flow_error": error}
        rows += [{"style": style, "metric": k, "value": float(np.nanmean(v.numpy()))} for k, v in values.items()]
    frame = pd.DataFrame(rows)
    clean = frame[frame["style"] == "clean"].set_index("metric")["value"]
    frame["ratio"] = frame["value"] / frame["metric"].map(clean)
    return frame


def shortfalls(frame: pd.DataFrame, size: int) -> pd.DataFrame:
    """The rows of a :func:`fidelity` frame whose ratio falls below :data:`KEPT` at the floor size
    nearest below ``size`` (empty: every style keeps enough of the object and its motion)."""
    floors = KEPT[max([s for s in KEPT if s <= size], default=min(KEPT))]
    styled = frame[(frame["style"] != "clean") & frame["metric"].isin(list(floors))]
    return styled[styled["ratio"] < styled["metric"].map(floors)]


def _check(clips: Tensor, masks: Tensor, flow: Tensor) -> None:
    if clips.dim() != 5 or clips.shape[1] != 3:
        raise ValueError(f"expected clips (B, 3, T, H, W), got {tuple(clips.shape)}")
    b, _, t, h, w = clips.shape
    if tuple(masks.shape) != (b, t, h, w):
        raise ValueError(f"expected masks (B, T, H, W) = {(b, t, h, w)}, got {tuple(masks.shape)}")
    if tuple(flow.shape) != (b, 2, t - 1, h, w):
        raise ValueError(f"expected flow (B, 2, T - 1, H, W) = {(b, 2, t - 1, h, w)}, got {tuple(flow.shape)}")
