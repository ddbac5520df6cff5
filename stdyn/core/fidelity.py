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
:func:`clip_fidelity` keeps the per-clip values and :func:`least_margin` says by how much the
styles clear those floors, so both can be resampled over clips (as can :func:`max_abs_r` over
the per-clip statistics of :func:`style_statistics`). :func:`world_clips` takes clips with exact
masks and flow from a synthetic world to run them on.
"""
from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from stdyn.core.stylize import STYLES, _sobel_magnitude, blur_frames, detail_share, luma, stylize
from stdyn.data import worlds
from stdyn.data.flow import farneback

STATISTICS: tuple[str, ...] = ("mean_red", "mean_green", "mean_blue", "detail_share", "luma_gradient")
"""Per-clip statistics of :func:`clip_statistics`: the mean of each colour channel, the share of
luma variance in fine detail (:func:`stdyn.core.stylize.detail_share`, the texture statistic the styles
decorrelate) and the mean Sobel gradient magnitude of luma (how much structure a clip shows, which
every style keeps, so it stays correlated across styles)."""
DECORRELATED: tuple[str, ...] = ("mean_red", "mean_green", "mean_blue", "detail_share")
"""The statistics on which any two styles must be unrelated (|r| at most :data:`MAX_ABS_R`)."""
MAX_ABS_R = 0.1
MOVING_PX = 0.5  # exact flow at least this long (pixels per frame) counts as moving
STILL_PX = 0.1  # estimated flow shorter than this counts as no motion (Farneback leaves such traces)
METRICS: tuple[str, ...] = ("visibility", "flow_cosine", "flow_error")  # the figures of :func:`fidelity`
KEPT = {
    16: {"visibility": 0.85, "flow_cosine": 0.7},
    32: {"visibility": 0.9, "flow_cosine": 0.9},
    64: {"visibility": 0.9, "flow_cosine": 0.9},
}
"""The least ratio to the clean clips that every style keeps, by frame size (pixels). At 16 px an
object is a few pixels across and a line drawing of it carries less of its motion for Farneback
flow. On world clips (:func:`world_clips`, 8 frames) every style keeps >= 0.94 of visibility at
every size and >= 0.9 of the flow cosine at 16 px. At 32 and 64 px the line styles (pencil,
relief) keep about 0.9-0.96 of the flow cosine (0.93 was short of it on many samples): they lose
most of it on the worlds' rotations, which turn the object 20-33 degrees a frame, where a pencil
drawing keeps 0.66-0.71 of the clean clip's flow cosine."""


def world_clips(n: int, *, frames: int = 8, size: int = 32, seed: int = 0,
                world: str = "ssv2") -> tuple[Tensor, Tensor, Tensor]:
    """``n`` clips of a synthetic world with the moving object's coverage and exact forward flow.

    The clips are the world's "val" split for ``seed``, rendered afresh (not cached); each draws
    its look at random (:mod:`stdyn.data.worlds.appearance`). Returns clips (n, 3, T, S, S) in [0, 1],
    coverage (n, T, S, S) in [0, 1] and flow (n, 2, T - 1, S, S) in pixels (dx, dy) on the
    pixels the object covers at frame t, zero elsewhere (:meth:`stdyn.data.worlds.World.annotations`).
    """
    rendered = worlds.make(world, "val", n=n, frames=frames, size=size, seed=seed, cache=False, progress=False)
    masks, flow = rendered.annotations(range(n))
    return rendered.clips(), masks, flow


def clip_statistics(clips: Tensor) -> Tensor:
    """Per-clip statistics (B, 5) of clips (B, 3, T, H, W), in the order of :data:`STATISTICS`."""
    luma_frames = luma(clips)
    return torch.cat([clips.mean((2, 3, 4)), detail_share(luma_frames)[:, None],
                      _sobel_magnitude(luma_frames).mean((1, 2, 3))[:, None]], 1)


def style_statistics(clips: Tensor, styles: Sequence[str] = STYLES, batch_size: int = 256) -> dict[str, Tensor]:
    """Per style, the per-clip statistics (B, 5) of ``clips`` (B, 3, T, H, W) in that style, in
    the order of :data:`STATISTICS` (float64)."""
    return {style: torch.cat([clip_statistics(stylize(chunk, style)) for chunk in clips.split(batch_size)]).double()
            for style in styles}


def correlations(statistics: Mapping[str, Tensor], styles: Sequence[str] | None = None) -> pd.DataFrame:
    """Pearson r over clips of each statistic between every two ``styles`` (default: all of
    ``statistics``, from :func:`style_statistics`). Columns: style_a, style_b, statistic, r, and
    decorrelated (whether the statistic is one of :data:`DECORRELATED`)."""
    pairs = itertools.combinations(list(statistics) if styles is None else styles, 2)
    rows = [{"style_a": a, "style_b": b, "statistic": name, "r": _pearson(statistics[a][:, k], statistics[b][:, k]),
             "decorrelated": name in DECORRELATED}
            for a, b in pairs for k, name in enumerate(STATISTICS)]
    return pd.DataFrame(rows)


def decorrelation(clips: Tensor, styles: Sequence[str] = STYLES, batch_size: int = 256) -> pd.DataFrame:
    """Pearson r over clips of each statistic of :data:`STATISTICS` between every two styles.

    ``clips`` (B, 3, T, H, W) in [0, 1]. The table of :func:`correlations`. With B clips, r of
    unrelated statistics scatters by about 1 / sqrt(B).
    """
    return correlations(style_statistics(clips, styles, batch_size), styles)


def max_abs_r(statistics: Mapping[str, Tensor], indices: Sequence[int] | np.ndarray | None = None) -> float:
    """The largest |r| between two styles over the :data:`DECORRELATED` statistics, from
    :func:`style_statistics`, on the clips ``indices`` (all by default; repeats count again, as in
    a bootstrap resample). NaN if some statistic does not vary."""
    columns = [STATISTICS.index(name) for name in DECORRELATED]
    rows = slice(None) if indices is None else torch.as_tensor(np.asarray(indices), dtype=torch.long)
    centred = {}
    for style, values in statistics.items():
        picked = values[rows][:, columns]
        picked = picked - picked.mean(0)
        centred[style] = picked / picked.norm(dim=0)  # 0 / 0 = NaN for a constant statistic
    r = torch.stack([(centred[a] * centred[b]).sum(0) for a, b in itertools.combinations(centred, 2)])
    return float(r.abs().max())


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

    ``options`` override the parameters of :func:`stdyn.data.flow.farneback`, which default here to
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


def clip_fidelity(clips: Tensor, masks: Tensor, flow: Tensor, styles: Sequence[str] = STYLES,
                  **options: float) -> pd.DataFrame:
    """Per-clip visibility and motion survival of the object, for the clean clips and in each style.

    ``clips`` (B, 3, T, S, S) in [0, 1], ``masks`` (B, T, S, S) the object's coverage, ``flow``
    (B, 2, T - 1, S, S) its exact forward flow in pixels; ``options`` go to :func:`flow_agreement`.
    One row per clip; columns (style, metric) with style "clean" first, then ``styles``, and
    metric one of :data:`METRICS`. NaN where a clip has no boundary or no moving pixels (a clip
    whose object only fades in or out has no motion to agree with).
    """
    _check(clips, masks, flow)
    columns = {}
    for style in ("clean", *styles):
        styled = clips if style == "clean" else stylize(clips, style)
        cosine, error = flow_agreement(styled, flow, masks, **options)
        values = {"visibility": visibility(styled, masks), "flow_cosine": cosine, "flow_error": error}
        columns.update({(style, metric): values[metric].numpy() for metric in METRICS})
    frame = pd.DataFrame(columns)
    frame.columns.names = ["style", "metric"]
    frame.index.name = "clip"
    return frame


def summarise(per_clip: pd.DataFrame) -> pd.DataFrame:
    """The :func:`fidelity` table of a :func:`clip_fidelity` frame (or of some of its rows)."""
    means = per_clip.mean()  # NaN clips are left out
    frame = pd.DataFrame({"style": means.index.get_level_values("style"),
                          "metric": means.index.get_level_values("metric"), "value": means.to_numpy()})
    frame["ratio"] = frame["value"] / frame["metric"].map(means["clean"])
    return frame


def fidelity(clips: Tensor, masks: Tensor, flow: Tensor, styles: Sequence[str] = STYLES,
             **options: float) -> pd.DataFrame:
    """Visibility and motion survival of the object, for the clean clips and in each style.

    Arguments as for :func:`clip_fidelity`. Columns: style ("clean" first, then ``styles``),
    metric (visibility, flow_cosine, flow_error), value (the mean over clips) and ratio (value
    over the clean clips' value; for flow_error, a ratio above 1 is worse).
    """
    return summarise(clip_fidelity(clips, masks, flow, styles, **options))


def floors(size: int) -> dict[str, float]:
    """The floors of :data:`KEPT` at the size nearest below ``size`` (the smallest below 16 px)."""
    return KEPT[max([s for s in KEPT if s <= size], default=min(KEPT))]


def shortfalls(frame: pd.DataFrame, size: int) -> pd.DataFrame:
    """The rows of a :func:`fidelity` frame whose ratio falls below :func:`floors` at ``size``
    (empty: every style keeps enough of the object and its motion)."""
    least = floors(size)
    styled = frame[(frame["style"] != "clean") & frame["metric"].isin(list(least))]
    return styled[styled["ratio"] < styled["metric"].map(least)]


def least_margin(per_clip: pd.DataFrame, size: int, metrics: Sequence[str] | None = None) -> float:
    """The smallest ratio minus its floor (:func:`floors` at ``size``) over the styles of a
    :func:`clip_fidelity` frame (or of some of its rows, e.g. a bootstrap resample) and the
    ``metrics`` (default: every metric with a floor). At least 0: every style keeps its floors."""
    least = floors(size)
    metrics = list(least) if metrics is None else list(metrics)
    if not metrics or set(metrics) - set(least):
        raise ValueError(f"metrics must be some of {list(least)}, got {metrics}")
    frame = summarise(per_clip)
    styled = frame[(frame["style"] != "clean") & frame["metric"].isin(metrics)]
    return float((styled["ratio"] - styled["metric"].map(least)).min())


def _check(clips: Tensor, masks: Tensor, flow: Tensor) -> None:
    if clips.dim() != 5 or clips.shape[1] != 3:
        raise ValueError(f"expected clips (B, 3, T, H, W), got {tuple(clips.shape)}")
    b, _, t, h, w = clips.shape
    if tuple(masks.shape) != (b, t, h, w):
        raise ValueError(f"expected masks (B, T, H, W) = {(b, t, h, w)}, got {tuple(masks.shape)}")
    if tuple(flow.shape) != (b, 2, t - 1, h, w):
        raise ValueError(f"expected flow (B, 2, T - 1, H, W) = {(b, 2, t - 1, h, w)}, got {tuple(flow.shape)}")
