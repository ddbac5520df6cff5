"""Four fixed, temporally consistent video styles built from classical image processing.

A dynamic pair shows the same video in two different styles, so a style must change what a single
frame looks like (colour, brightness, texture) while leaving motion alone. Every style here is one
transform per video: its per-video parameters (the luminance equalisation, the chroma gain, the
paper tone) are computed over the whole clip and applied identically to every frame, and the rest
are per-pixel or local (3x3, 5x5) operations inside a frame. A static clip therefore stays static
and a translated pattern stays a translated pattern.

All four styles start from the video's *equalised* luminance ``u`` (denoised luma, stretched to
the clip's range and mapped through its contrast-limited cumulative histogram, so ``u`` is close
to uniform over the clip whatever its exposure, while faint camera noise stays faint) and then
take their colour from different, mutually unrelated sources:

- ``thermal``: a false-colour map of ``u`` whose three channels are cosines of different
  frequencies (2, 3 and 4 half-periods), so no channel is a monotone function of brightness;
- ``cartoon``: ``u`` posterised into five bands, each with its own grey (not in brightness
  order), coloured by the video's chroma rotated by
  240 degrees and normalised, with black outlines where ``u`` has strong edges;
- ``sketch``: pencil strokes (local contrast of ``u``) on tinted paper, paler the further the
  video's average brightness is from mid-grey; the strokes are mean-neutral, so the paper tone
  alone sets the clip's average colour;
- ``negative``: inverted ``u`` with the video's chroma rotated by 150 degrees and normalised.

Because the styles draw their per-video colour from independent properties (the shape of the
luminance histogram, chroma directions 90 degrees apart, the distance of the raw brightness from
mid-grey), the per-video mean colour of a clip correlates only weakly between two different
styles (|r| of about 0.2 per channel across varied random videos; the tests check < 0.3).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

STYLES: tuple[str, ...] = ("thermal", "cartoon", "sketch", "negative")

_LUMA_WEIGHTS = (0.299, 0.587, 0.114)
_EQUALISE_BINS = 64
_EQUALISE_CLIP_LIMIT = 2.0
_THERMAL_HALF_PERIODS = (2, 3, 4)
# Band greys out of brightness order, so a cartoon's average grey is not a function of how
# bright the video is (which the negative style inverts).
_CARTOON_GREYS = (0.4, 0.85, 0.25, 0.7, 0.55)
_CARTOON_EDGE_THRESHOLD = 0.15
_CARTOON_CHROMA_ROTATION = 240.0
_NEGATIVE_CHROMA_ROTATION = 150.0
_CHROMA_RMS = 0.25
_MAX_CHROMA_GAIN = 4.0
_SKETCH_TINT = (0.08, 0.02)
_SKETCH_INK_GAIN = 10.0
_SKETCH_MAX_INK = 0.45


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

    Returns a tensor of the same shape and dtype, in [0, 1]. Deterministic.
    """
    index = style_index(style)
    batch = _as_batch(clips)
    luminance_rank = equalise_luminance(batch)
    out = _RENDERERS[index](batch, luminance_rank).clamp_(0.0, 1.0)
    return out if clips.dim() == 5 else out[0]


def equalise_luminance(batch: Tensor) -> Tensor:
    """Per-video contrast-limited equalisation of luma: (B, 3, T, H, W) -> (B, T, H, W) in [0, 1].

    The luma is denoised (a 5x5 binomial blur per frame), stretched so that its 0.5th and 99.5th
    percentiles over the clip map to 0 and 1 (so exposure and contrast do not matter), and then
    mapped through the clip's cumulative histogram with every bin's share capped at
    ``_EQUALISE_CLIP_LIMIT`` times the uniform one (the excess spread over all bins), interpolated
    within bins. The cap bounds the map's slope: plain equalisation would stretch the faint camera
    noise of a flat background over that background's whole share of the range, and the styles
    would turn it into flickering confetti that hides the moving object.
    """
    luma = sum(weight * channel for weight, channel in zip(_LUMA_WEIGHTS, batch.unbind(1)))
    smooth = blur_frames(luma).flatten(1)
    low, high = torch.quantile(smooth, torch.tensor([0.005, 0.995], dtype=smooth.dtype, device=smooth.device),
                               dim=1, keepdim=True)
    stretched = ((smooth - low) / (high - low).clamp(min=1e-3)).clamp_(0.0, 1.0)
    position = stretched * _EQUALISE_BINS
    bins = position.long().clamp_(max=_EQUALISE_BINS - 1)
    share = torch.zeros(smooth.shape[0], _EQUALISE_BINS, dtype=batch.dtype, device=batch.device)
    share.scatter_add_(1, bins, torch.full_like(stretched, 1.0 / stretched.shape[1]))
    limit = _EQUALISE_CLIP_LIMIT / _EQUALISE_BINS
    excess = (share - limit).clamp(min=0).sum(1, keepdim=True)
    share = share.clamp(max=limit) + excess / _EQUALISE_BINS
    below = share.cumsum(1) - share
    u = below.gather(1, bins) + share.gather(1, bins) * (position - bins)
    return u.clamp_(0.0, 1.0).view_as(luma)


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


def _sobel_magnitude(u: Tensor) -> Tensor:
    """Gradient magnitude (Sobel, normalised to 1 for a unit step) of each frame of (B, T, H, W)."""
    padded = _pad_frames(u, 1)
    smooth_x = padded[..., :, :-2] + 2 * padded[..., :, 1:-1] + padded[..., :, 2:]
    smooth_y = padded[..., :-2, :] + 2 * padded[..., 1:-1, :] + padded[..., 2:, :]
    grad_y = (smooth_x[..., 2:, :] - smooth_x[..., :-2, :]) / 8
    grad_x = (smooth_y[..., :, 2:] - smooth_y[..., :, :-2]) / 8
    return torch.sqrt(grad_x**2 + grad_y**2)


def _from_opponent(grey: Tensor, chroma_1: Tensor, chroma_2: Tensor) -> Tensor:
    """RGB (B, 3, T, H, W) from a grey level in [0, 1] and two opponent chroma coordinates."""
    red_green, yellow_blue = chroma_1 / math.sqrt(2), chroma_2 / math.sqrt(6)
    return torch.stack([grey + red_green + yellow_blue, grey - red_green + yellow_blue, grey - 2 * yellow_blue], 1)


def _rotated_chroma(batch: Tensor, degrees: float) -> tuple[Tensor, Tensor]:
    """The video's opponent chroma rotated by ``degrees``, rescaled to a fixed RMS over the clip."""
    red, green, blue = batch.unbind(1)
    chroma_1 = (red - green) / math.sqrt(2)
    chroma_2 = (red + green - 2 * blue) / math.sqrt(6)
    chroma_1, chroma_2 = blur_frames(chroma_1), blur_frames(chroma_2)  # denoised, as the luma
    cos, sin = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    chroma_1, chroma_2 = chroma_1 * cos - chroma_2 * sin, chroma_1 * sin + chroma_2 * cos
    rms = (chroma_1**2 + chroma_2**2).mean((1, 2, 3), keepdim=True).sqrt()
    gain = (_CHROMA_RMS / (rms + 1e-6)).clamp(max=_MAX_CHROMA_GAIN)
    return chroma_1 * gain, chroma_2 * gain


def _thermal(batch: Tensor, u: Tensor) -> Tensor:
    return torch.stack([0.5 - 0.5 * torch.cos(math.pi * k * u) for k in _THERMAL_HALF_PERIODS], 1)


def _cartoon(batch: Tensor, u: Tensor) -> Tensor:
    band = torch.floor(u * len(_CARTOON_GREYS)).clamp_(max=len(_CARTOON_GREYS) - 1).long()
    grey = torch.tensor(_CARTOON_GREYS, dtype=batch.dtype, device=batch.device)[band]
    chroma_1, chroma_2 = _rotated_chroma(batch, _CARTOON_CHROMA_ROTATION)
    flat = _from_opponent(grey, chroma_1, chroma_2)
    outline = _sobel_magnitude(u) > _CARTOON_EDGE_THRESHOLD
    return flat * (1 - 0.85 * outline.to(batch.dtype))[:, None]


def _sketch(batch: Tensor, u: Tensor) -> Tensor:
    ink = ((u - blur_frames(u)).abs() * _SKETCH_INK_GAIN).clamp_(max=_SKETCH_MAX_INK)
    # The paper tone depends on brightness symmetrically (pale for very bright or very dark clips):
    # an odd dependence would couple it to the clipped highlights or shadows that shift the
    # equalised luminance, and so to the colours of the other styles.
    paper = 0.3 + 0.8 * (batch.mean((1, 2, 3, 4)) - 0.5).abs()[:, None, None, None]
    # Paper brightened by the clip's average ink: the strokes do not change the mean colour.
    grey = paper - ink + ink.mean((1, 2, 3), keepdim=True)
    tint_1, tint_2 = (torch.full_like(grey, value) for value in _SKETCH_TINT)
    return _from_opponent(grey, tint_1, tint_2)


def _negative(batch: Tensor, u: Tensor) -> Tensor:
    return _from_opponent(1 - u, *_rotated_chroma(batch, _NEGATIVE_CHROMA_ROTATION))


_RENDERERS = (_thermal, _cartoon, _sketch, _negative)
