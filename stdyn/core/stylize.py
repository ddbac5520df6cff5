"""Four fixed, temporally consistent video styles built from classical image processing.

A dynamic pair shows the same clip in two different styles, so a style must change what a frame
looks like (colour, brightness, texture) while keeping the object, its outline and its motion.
Every style is one transform per clip: its per-clip parameters are computed over the whole clip
and applied identically to every frame, and everything else is a per-pixel or local operation
inside a frame (reaching at most 5, 6 and 10 pixels at 16, 32 and 64 px). A static clip
therefore stays static and a translated pattern stays a translated pattern.

All styles read the clip through a shared analysis of its denoised frames (a 3x3 binomial blur
below 24 px, 5x5 above): the *tone* (luma, stretched to the clip's range and equalised with a
contrast limit), colour *lines* (colour-edge strength, thinned to one pixel from 24 px up, drawn
in proportion to the clip's strongest edges) and broad *shading* (the tone, heavily blurred).
Sensor noise is estimated per clip and kept below the thresholds of both the stretch and the
lines, so camera noise does not turn into flicker.

- ``thermal``: the tone through a perceptual colour map (black, purple, red, orange, yellow),
  like a thermal camera; each clip spans its own 70% stretch of the map. This is the one
  pointwise colour map (a recolouring, which training sees); the other three change edges and
  texture, which training never does.
- ``comic``: the clip's luma posterised into four bands split at the emptiest levels of its
  histogram (so no split runs through a flat, noisy region), filled with four flat colours of
  similar lightness and different hues, near-black ink outlines on the lines, and soft airbrushed
  shading.
- ``pencil``: graphite lines on tinted paper with a soft tonal wash.
- ``relief``: the lines embossed (lit from one direction) on a tinted plate, over soft shading.

Per clip, each style draws its colours (where thermal's map starts; the comic palette, the
paper, the plate, the light direction) and, for comic, pencil and relief, a target *fine-detail
share* (the part of the clip's luma variance finer than a 5x5 blur: thin lines give a large
share, soft shading a small one; :func:`detail_share`) from its own pseudo-random function of
the clip (:meth:`_Analysis.draws`: the fractional part of a steep projection of the clip's mean
colour and contrast). Each of those three styles then mixes its sharp layer (lines, flat fills)
with its soft shading to meet its target: more shading first, then, if that is not enough,
fainter lines. So what two styles make of one clip's colour and of its texture's fineness is
unrelated: over 2000 world clips (:func:`stdyn.core.fidelity.world_clips`) every style pair has
|r| <= 0.07 for the mean red, green and blue and for the fine-detail share at 32 and 64 px (at
16 px, thermal's and pencil's fine-detail shares keep r of about 0.08-0.125). The *amount* of
structure (for example the mean gradient magnitude of luma) still correlates between styles (r
about 0.4-0.9 at 32 px), by design: every style keeps the object's and the scene's outlines, as
the paper's neural stylisation keeps a scene's layout.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

STYLES: tuple[str, ...] = ("thermal", "comic", "pencil", "relief")

LUMA_WEIGHTS = (0.299, 0.587, 0.114)
_EQUALISE_BINS = 64
_EQUALISE_CLIP_LIMIT = 2.0
_NOISE_RANGE = 100.0  # the tone stretches no clip's luma range below this many noise deviations
_CHROMA_EDGE_WEIGHT = 0.7
_EDGE_QUANTILE = 0.99  # a clip's edges at this quantile are drawn as full lines
_EDGE_FLOOR = 0.03  # nor are edges weaker than this (a Sobel gradient of luma or chroma)
_LINE_START = 0.15  # lines start at this fraction of the full-line edge strength ...
_LINE_START_NOISE = 7.0  # ... and at no fewer noise deviations (noise edges rarely pass 3)
_LINE_GAMMA = 1.5  # line strength grows faster than edge strength: weak edges stay faint
_THIN_SIZE = 24  # lines are thinned to one pixel on frames at least this large
_SMALL_SIZE = 24  # frames smaller than this are denoised less and drawn with softer pencil lines
_SHADING_AMPLITUDE = {"comic": 0.25, "pencil": 0.35, "relief": 0.35}  # luma, at twice the RMS
_COMIC_INK = 0.15
_MAX_LINE_CUT = 0.85  # at most, a style keeps 15% of its sharp layer's contrast
_RIDGE_DEPTH = 0.8
# Per style, the range of per-clip target fine-detail shares at 16, 32 and 64 px (interpolated
# in log size between): fine detail is a larger share of a small frame, and a style's range lies
# where most clips can meet it.
_DETAIL_TARGETS = {
    "comic": ((0.065, 0.095), (0.08, 0.19), (0.05, 0.12)),
    "pencil": ((0.045, 0.085), (0.15, 0.3), (0.12, 0.28)),
    "relief": ((0.07, 0.2), (0.15, 0.37), (0.12, 0.36)),
}
_THERMAL_SLIDE = 0.3
# A perceptual "inferno"-like map: black, purple, red, orange, yellow, pale yellow.
_THERMAL_STOPS = (
    (0.00, 0.00, 0.02), (0.26, 0.04, 0.41), (0.58, 0.15, 0.40), (0.87, 0.32, 0.23),
    (0.99, 0.60, 0.04), (0.98, 0.99, 0.64),
)


def style_index(style: int | str) -> int:
    """The position of ``style`` (a name from :data:`STYLES` or an index) in :data:`STYLES`."""
    if isinstance(style, str):
        if style not in STYLES:
            raise ValueError(f"unknown style {style!r}; choose one of {STYLES} or an index 0..{len(STYLES) - 1}")
        return STYLES.index(style)
    if isinstance(style, bool) or not isinstance(style, int) or not 0 <= style < len(STYLES):
        raise ValueError(f"style must be one of {STYLES} or an index 0..{len(STYLES) - 1}, got {style!r}")
    return style


def stylize(clips: Tensor, style: int | str) -> Tensor:
    """Render a clip (3, T, H, W) or a batch (B, 3, T, H, W) in [0, 1] in one of :data:`STYLES`.

    Returns a tensor of the same shape and dtype, in [0, 1]. Deterministic; each clip of a batch
    is rendered on its own.
    """
    index = style_index(style)
    batch = _as_batch(clips)
    out = _RENDERERS[index](_Analysis(batch)).clamp_(0.0, 1.0)
    return out if clips.dim() == 5 else out[0]


def equalise_luminance(batch: Tensor) -> Tensor:
    """The styles' tone of clips (B, 3, T, H, W): (B, T, H, W) in [0, 1].

    The denoised luma is stretched so that its 0.5th and 99.5th percentiles over the clip map to
    0 and 1 (but never over a range narrower than ``_NOISE_RANGE`` deviations of the clip's noise),
    then mapped through the clip's cumulative histogram with every bin's share capped at
    ``_EQUALISE_CLIP_LIMIT`` times the uniform one (less for clips whose range is less than twice
    the narrowest; the excess spread over all bins). The cap bounds the map's slope, so a flat
    background's faint noise stays faint.
    """
    return _Analysis(_as_batch(batch)).tone


def detail_share(luma_frames: Tensor) -> Tensor:
    """Per clip (B,): the share of a clip's luma variance (B, T, H, W) in its fine detail, the
    luma minus its 5x5 binomial blur (0: smooth; thin lines on a flat ground: about 0.3-0.6)."""
    detail = luma_frames - blur_frames(luma_frames)
    deviation = luma_frames - luma_frames.mean((1, 2, 3), keepdim=True)
    return detail.pow(2).flatten(1).sum(1) / deviation.pow(2).flatten(1).sum(1).clamp(min=1e-12)


def luma(clips: Tensor) -> Tensor:
    """Luma (B, T, H, W) of clips (B, 3, T, H, W)."""
    red, green, blue = clips.unbind(1)
    return LUMA_WEIGHTS[0] * red + LUMA_WEIGHTS[1] * green + LUMA_WEIGHTS[2] * blue


def blur_frames(u: Tensor, taps: tuple[float, ...] = (1.0, 4.0, 6.0, 4.0, 1.0)) -> Tensor:
    """Separable binomial blur of each frame of (B, T, H, W).

    Written as shifted sums: on CPU a single-channel ``conv2d`` is an order of magnitude slower.
    """
    radius = len(taps) // 2
    h, w = u.shape[-2:]
    padded = _pad_frames(u, radius)
    total = sum(taps)
    rows = sum(tap * padded[..., i : i + h, :] for i, tap in enumerate(taps)) / total
    return sum(tap * rows[..., i : i + w] for i, tap in enumerate(taps)) / total


class _Analysis:
    """What the styles read from a batch (B, 3, T, H, W); each part is computed once, on demand."""

    def __init__(self, batch: Tensor) -> None:
        self.batch = batch
        self.size = min(batch.shape[-2:])
        self.taps = (1.0, 2.0, 1.0) if self.size < _SMALL_SIZE else (1.0, 4.0, 6.0, 4.0, 1.0)
        b, _, t, h, w = batch.shape
        smooth = blur_frames(batch.reshape(b * 3, t, h, w), self.taps).view_as(batch)
        self.luma = luma(smooth)
        red, green, blue = smooth.unbind(1)
        self.chroma = ((red - green) / math.sqrt(2), (red + green - 2 * blue) / math.sqrt(6))
        # Luma noise left after the blur: a robust deviation of the raw luma's residual to a 3x3
        # binomial blur (divided by that residual's gain on white noise, 0.8), times the blur's
        # own gain on white noise.
        raw = luma(batch)
        residual = (raw - blur_frames(raw, (1.0, 2.0, 1.0))).flatten(1)
        sigma = 1.4826 * residual.abs().median(1).values / 0.8004
        self.noise = sigma * sum(tap * tap for tap in self.taps) / sum(self.taps) ** 2  # (B,)
        self._cache: dict[str, Tensor] = {}

    @property
    def tone(self) -> Tensor:
        """Equalised luma (B, T, H, W) in [0, 1] (see :func:`equalise_luminance`)."""
        if "tone" not in self._cache:
            self._cache["tone"] = _equalise(self.luma, self.noise)
        return self._cache["tone"]

    @property
    def lines(self) -> Tensor:
        """Line strength (B, T, H, W) in [0, 1] along the clip's colour edges."""
        if "lines" not in self._cache:
            edge, normal = self._edges()
            top = torch.quantile(edge.flatten(1), _EDGE_QUANTILE, dim=1)
            if self.size >= _THIN_SIZE:
                edge = _thin(edge, normal)
            # Noise never makes lines, unless a clip's strongest edges are that faint themselves.
            start = torch.maximum(_LINE_START * top, torch.minimum(_LINE_START_NOISE * self.noise, 0.7 * top))
            full = torch.maximum(torch.maximum(top, 2.5 * start), torch.full_like(top, _EDGE_FLOOR))
            start, full = start.view(-1, 1, 1, 1), full.view(-1, 1, 1, 1)
            self._cache["lines"] = ((edge - start) / (full - start)).clamp(0, 1) ** _LINE_GAMMA
        return self._cache["lines"]

    @property
    def shading(self) -> Tensor:
        """Broad shading (B, T, H, W), about in [-1, 1]: the tone blurred (more on larger frames),
        in units of two RMS, clamped there, with zero mean over the clip."""
        if "shading" not in self._cache:
            smooth = self.tone
            for _ in range(max(2, self.size // 16)):
                smooth = blur_frames(smooth)
            smooth = smooth - smooth.mean((1, 2, 3), keepdim=True)
            unit = (smooth / smooth.pow(2).mean((1, 2, 3), keepdim=True).sqrt().clamp(min=1e-3)).clamp(-2, 2) / 2
            # Centred again after the clamp: a style's shading must not move its mean colour.
            self._cache["shading"] = unit - unit.mean((1, 2, 3), keepdim=True)
        return self._cache["shading"]

    def draws(self, salt: int, k: int) -> Tensor:
        """``k`` pseudo-random numbers in [0, 1) per clip (B, k): the fractional parts of fixed
        random projections (one set per ``salt``) of the clip's mean colour and luma contrast,
        steep enough that they vary fast from clip to clip. Each style draws its per-clip colours
        and targets with its own salt, so what two styles make of one clip is unrelated."""
        generator = torch.Generator().manual_seed(1000 + salt)
        weights = (torch.rand(4, k, generator=generator, dtype=torch.float64) * 2 - 1) * 60
        offset = torch.rand(k, generator=generator, dtype=torch.float64)
        if "features" not in self._cache:
            self._cache["features"] = torch.cat([self.batch.mean((2, 3, 4)), self.luma.flatten(1).std(1)[:, None]], 1)
        features = self._cache["features"].double()
        draws = torch.remainder(features @ weights.to(features.device) + offset.to(features.device), 1.0)
        return draws.to(self.batch.dtype)

    def _edges(self) -> tuple[Tensor, Tensor]:
        """Colour-edge strength (the root of the largest eigenvalue of the Di Zenzo structure
        tensor over luma and weighted chroma) and the edge normal's angle, each (B, T, H, W)."""
        jxx = jyy = jxy = 0
        for channel, weight in ((self.luma, 1.0), (self.chroma[0], _CHROMA_EDGE_WEIGHT),
                                (self.chroma[1], _CHROMA_EDGE_WEIGHT)):
            gx, gy = _sobel(channel)
            jxx, jyy, jxy = jxx + weight**2 * gx * gx, jyy + weight**2 * gy * gy, jxy + weight**2 * gx * gy
        root = torch.sqrt(((jxx - jyy) / 2) ** 2 + jxy**2)
        return torch.sqrt(((jxx + jyy) / 2 + root).clamp(min=0)), 0.5 * torch.atan2(2 * jxy, jxx - jyy)


def _thin(edge: Tensor, normal: Tensor) -> Tensor:
    """Soft non-maximum suppression: edge strength kept where it is near the larger of its two
    neighbours along the edge normal (quantised to four directions), faded out below 70% of it."""
    h, w = edge.shape[-2:]
    padded = _pad_frames(edge, 1)
    direction = torch.remainder(torch.round(normal / (math.pi / 4)), 4).long()
    neighbour = torch.zeros_like(edge)
    for k, (dy, dx) in enumerate(((0, 1), (1, 1), (1, 0), (1, -1))):
        ahead = padded[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
        behind = padded[..., 1 - dy : 1 - dy + h, 1 - dx : 1 - dx + w]
        neighbour = torch.where(direction == k, torch.maximum(ahead, behind), neighbour)
    ratio = edge / neighbour.clamp(min=1e-6)
    return edge * _smoothstep((ratio - 0.7) / 0.3)


def _smoothstep(x: Tensor) -> Tensor:
    x = x.clamp(0.0, 1.0)
    return x * x * (3 - 2 * x)


def _equalise(signal: Tensor, noise: Tensor) -> Tensor:
    """Contrast-limited equalisation of (B, T, H, W) over each clip, given its noise (B,) (see
    :func:`equalise_luminance`)."""
    flat = signal.flatten(1)
    low, high = torch.quantile(flat, torch.tensor([0.005, 0.995], dtype=flat.dtype, device=flat.device),
                               dim=1, keepdim=True)
    least = (_NOISE_RANGE * noise[:, None]).clamp(min=1e-3)
    spread = torch.maximum(high - low, least)
    # The map's slope (at most the clip limit times the uniform one) is cut further for clips
    # whose range is only a little wider than the least one, so their noise stays as faint.
    clip_limit = (spread / least).clamp(1.0, _EQUALISE_CLIP_LIMIT)
    low = (low + high - spread) / 2
    stretched = ((flat - low) / spread).clamp_(0.0, 1.0)
    position = stretched * _EQUALISE_BINS
    bins = position.long().clamp_(max=_EQUALISE_BINS - 1)
    share = torch.zeros(flat.shape[0], _EQUALISE_BINS, dtype=signal.dtype, device=signal.device)
    share.scatter_add_(1, bins, torch.full_like(stretched, 1.0 / stretched.shape[1]))
    limit = clip_limit / _EQUALISE_BINS
    excess = (share - limit).clamp(min=0).sum(1, keepdim=True)
    share = share.clamp(max=limit) + excess / _EQUALISE_BINS
    below = share.cumsum(1) - share
    u = below.gather(1, bins) + share.gather(1, bins) * (position - bins)
    return u.clamp_(0.0, 1.0).view_as(signal)


def _as_batch(clips: Tensor) -> Tensor:
    if not isinstance(clips, Tensor):
        raise TypeError(f"expected a tensor (3, T, H, W) or (B, 3, T, H, W), got {type(clips).__name__}")
    if clips.dim() == 4 and clips.shape[0] == 3:
        batch = clips[None]
    elif clips.dim() == 5 and clips.shape[1] == 3:
        batch = clips
    else:
        raise ValueError(
            f"expected a clip (3, T, H, W) or a batch (B, 3, T, H, W) with RGB in dim -4, "
            f"got shape {tuple(clips.shape)}"
        )
    if not clips.is_floating_point():
        raise ValueError(f"expected float values in [0, 1], got dtype {clips.dtype}; divide uint8 frames by 255")
    if clips.numel() and (clips.min() < -1e-3 or clips.max() > 1 + 1e-3):
        raise ValueError(
            f"expected values in [0, 1], got range [{clips.min().item():.3g}, {clips.max().item():.3g}]"
        )
    return batch


def _pad_frames(u: Tensor, radius: int) -> Tensor:
    """Replicate-pad every frame of (B, T, H, W) by ``radius`` pixels."""
    b, t, h, w = u.shape
    padded = F.pad(u.reshape(b * t, 1, h, w), (radius,) * 4, mode="replicate")
    return padded.view(b, t, h + 2 * radius, w + 2 * radius)


def _sobel(u: Tensor) -> tuple[Tensor, Tensor]:
    """Sobel derivatives (d/dx, d/dy) of each frame of (B, T, H, W), normalised to 1 for a unit ramp."""
    padded = _pad_frames(u, 1)
    smooth_x = padded[..., :, :-2] + 2 * padded[..., :, 1:-1] + padded[..., :, 2:]
    smooth_y = padded[..., :-2, :] + 2 * padded[..., 1:-1, :] + padded[..., 2:, :]
    grad_y = (smooth_x[..., 2:, :] - smooth_x[..., :-2, :]) / 8
    grad_x = (smooth_y[..., :, 2:] - smooth_y[..., :, :-2]) / 8
    return grad_x, grad_y


def _sobel_magnitude(u: Tensor) -> Tensor:
    """Gradient magnitude (Sobel, normalised to 1 for a unit step) of each frame of (B, T, H, W)."""
    grad_x, grad_y = _sobel(u)
    return torch.sqrt(grad_x**2 + grad_y**2)


def _yuv(y: Tensor, u: Tensor, v: Tensor) -> Tensor:
    """RGB (..., 3) from luma ``y`` and chroma ``u`` (blue - luma), ``v`` (red - luma), clipped to [0, 1]."""
    return torch.stack([y + 1.140 * v, y - 0.395 * u - 0.581 * v, y + 2.032 * u], -1).clamp(0, 1)


def _tint(luma_level: Tensor, chroma: Tensor, hue_turns: Tensor) -> Tensor:
    """Flat colours (B, 3, 1, 1, 1) of a given luma, chroma magnitude and hue (each (B,))."""
    angle = 2 * math.pi * hue_turns
    return _yuv(luma_level, chroma * angle.cos(), chroma * angle.sin())[:, :, None, None, None]


def _detail_target(a: _Analysis, style: str) -> Tensor:
    """The per-clip target fine-detail share (B,) of ``style`` at the clip's frame size."""
    anchors = _DETAIL_TARGETS[style]
    position = min(max(math.log2(a.size / 16), 0.0), 2.0)
    k = min(int(position), 1)
    frac = position - k
    low, high = ((1 - frac) * anchors[k][i] + frac * anchors[k + 1][i] for i in range(2))
    return low + (high - low) * a.draws(len(STYLES) + STYLES.index(style), 1)[:, 0]


def _mix(a: _Analysis, style: str, sharp: Tensor, wash: Tensor) -> Tensor:
    """``sharp`` (B, 3, T, H, W) with a growing part of the zero-mean ``wash``, then with the
    sharp layer's contrast cut by up to ``_MAX_LINE_CUT``: the point on that path whose luma
    comes closest to the clip's target fine-detail share. The share along the path is computed
    in closed form from six inner products per clip."""
    target = _detail_target(a, style)
    mean = sharp.mean((2, 3, 4), keepdim=True)
    layers = [luma(sharp - mean), luma(wash)]
    details = [x - blur_frames(x) for x in layers]
    deviations = [x - x.mean((1, 2, 3), keepdim=True) for x in layers]

    def quadratic(parts: list[Tensor], keep: Tensor, add: Tensor) -> Tensor:
        def dot(x: Tensor, y: Tensor) -> Tensor:
            return (x * y).flatten(1).sum(1)[:, None]

        return (keep**2 * dot(parts[0], parts[0]) + 2 * keep * add * dot(parts[0], parts[1])
                + add**2 * dot(parts[1], parts[1]))

    path = 2 * torch.linspace(0, 1, 101, dtype=sharp.dtype, device=sharp.device)[None] ** 2  # fine near 0
    keep, add = 1 - _MAX_LINE_CUT * (path - 1).clamp(min=0), path.clamp(max=1)
    share = quadratic(details, keep, add) / quadratic(deviations, keep, add).clamp(min=1e-12)
    best = (share - target[:, None]).abs().argmin(1)
    keep, add = (x[0, best].view(-1, 1, 1, 1, 1) for x in (keep, add))
    return mean + keep * (sharp - mean) + add * wash


def _valley_bands(a: _Analysis, n: int) -> Tensor:
    """Band indices (B, T, H, W) in 0..n-1: the clip's luma split at the ``n - 1`` emptiest levels
    of its (smoothed, 32-bin) histogram, at least four bins apart and not in the outer two bins."""
    flat = a.luma.flatten(1)
    low, high = torch.quantile(flat, torch.tensor([0.005, 0.995], dtype=flat.dtype, device=flat.device),
                               dim=1, keepdim=True)
    level = ((flat - low) / (high - low).clamp(min=1e-3)).clamp(0, 1)
    bins = 32
    index = (level * bins).long().clamp(max=bins - 1)
    density = torch.zeros(flat.shape[0], bins, dtype=flat.dtype, device=flat.device)
    density.scatter_add_(1, index, torch.ones_like(level))
    density = F.pad(density[:, None], (1, 1), mode="replicate")[:, 0]
    density = (density[:, :-2] + 2 * density[:, 1:-1] + density[:, 2:]) / (4 * flat.shape[1])
    position = torch.arange(bins, device=flat.device)
    density = density + 2.0 * ((position < 2) | (position >= bins - 2)).to(density)
    splits = []
    for _ in range(n - 1):
        best = density.argmin(1, keepdim=True)
        splits.append((best.to(flat.dtype) + 0.5) / bins)
        density = density + 2.0 * ((position - best).abs() <= 3).to(density)
    band = (level[:, :, None] > torch.cat(splits, 1)[:, None, :]).sum(2)
    return band.view_as(a.luma)


def _thermal(a: _Analysis) -> Tensor:
    stops = torch.tensor(_THERMAL_STOPS, dtype=a.batch.dtype, device=a.batch.device)
    # Each clip takes its own 70% stretch of the map, so its average colour slides along it.
    start = _THERMAL_SLIDE * a.draws(STYLES.index("thermal"), 1).view(-1, 1, 1, 1)
    position = (start + (1 - _THERMAL_SLIDE) * a.tone) * (len(stops) - 1)
    low = position.floor().long().clamp(max=len(stops) - 2)
    frac = (position - low)[..., None]
    return (stops[low] * (1 - frac) + stops[low + 1] * frac).movedim(-1, 1)


def _comic(a: _Analysis) -> Tensor:
    n = 4
    draws = a.draws(STYLES.index("comic"), 7)
    band = _valley_bands(a, n)
    # Similar lightness (the ink carries the contrast), lighter bands for lighter luma or the
    # reverse, hues a random step apart.
    levels = torch.linspace(0.45, 0.65, n, dtype=a.batch.dtype, device=a.batch.device)
    value = torch.where(draws[:, :1] < 0.5, levels.flip(0), levels)
    hues = 2 * math.pi * (draws[:, 1:2] + torch.arange(n, device=draws.device) * (0.2 + 0.2 * draws[:, 2:3]))
    chroma = 0.06 + 0.09 * draws[:, 3:7]
    palette = _yuv(value, chroma * hues.cos(), chroma * hues.sin())  # (B, n, 3)
    fill = torch.stack([palette[:, :, c].gather(1, band.flatten(1)).view_as(band) for c in range(3)], 1)
    lines = a.lines[:, None]
    inked = fill * (1 - lines) + _COMIC_INK * lines  # near-black ink, so the airbrush never pushes it below 0
    return _mix(a, "comic", inked, _SHADING_AMPLITUDE["comic"] * a.shading[:, None].expand_as(fill))


def _pencil(a: _Analysis) -> Tensor:
    draws = a.draws(STYLES.index("pencil"), 3)
    paper = _tint(0.55 + 0.2 * draws[:, 2], 0.03 + 0.09 * draws[:, 1], draws[:, 0])
    lines = a.lines
    if a.size < _SMALL_SIZE:  # a softer pencil on tiny frames, where a one-pixel line is a dot
        lines = blur_frames(lines, (1.0, 2.0, 1.0))
        lines = lines / lines.flatten(1).amax(1).clamp(min=1e-6).view(-1, 1, 1, 1)
    ink = 0.85 * lines
    # The paper is brightened by the clip's average ink, so the paper alone sets the mean colour.
    drawn = paper * (1 - ink + ink.mean((1, 2, 3), keepdim=True))[:, None]
    return _mix(a, "pencil", drawn, paper * _SHADING_AMPLITUDE["pencil"] * a.shading[:, None])


def _relief(a: _Analysis) -> Tensor:
    draws = a.draws(STYLES.index("relief"), 4)
    plate = _tint(0.42 + 0.16 * draws[:, 3], 0.03 + 0.12 * draws[:, 2], draws[:, 1])
    light = 2 * math.pi * draws[:, 0]
    grad_x, grad_y = _sobel(a.lines)
    ridges = _RIDGE_DEPTH * (grad_x * light.cos().view(-1, 1, 1, 1) + grad_y * light.sin().view(-1, 1, 1, 1))
    embossed = plate + ridges[:, None]
    return _mix(a, "relief", embossed, _SHADING_AMPLITUDE["relief"] * a.shading[:, None].expand_as(embossed))


_RENDERERS: tuple[Callable[[_Analysis], Tensor], ...] = (_thermal, _comic, _pencil, _relief)
