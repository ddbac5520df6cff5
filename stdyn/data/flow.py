"""Optical flow as images (the motion input of two-stream models), its jitter, and Farneback flow.

A flow image encodes direction as hue and magnitude as saturation (value = 1), the usual RGB
visualisation that two-stream segmentation models take as their motion input. Jittering hue
and saturation changes the motion a flow image shows while leaving the RGB frame alone: the
static pair of a two-stream model.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

HUE_SHIFT_BOUND = (0.1, 0.5)
"""Per frame, h ~ U(HUE_SHIFT_BOUND) and the hue shift ~ U[-h, h] (in turns, 1 = 360 degrees)."""
SATURATION_SPREAD = (0.1, 1.0)
"""Per frame, s ~ U(SATURATION_SPREAD) and the saturation factor ~ U[1 - s, 1 + s]."""


def flow_to_image(flow: Tensor, max_magnitude: float | None = None) -> Tensor:
    """HSV-encode flow (..., 2, H, W) (dx, dy in pixels) as RGB (..., 3, H, W) in [0, 1].

    Hue is the direction (0 = +x, increasing towards +y), saturation the magnitude divided by
    ``max_magnitude`` (clipped to 1; default: the largest magnitude in ``flow``), value 1.
    """
    _check_channels(flow, 2, "flow", "(..., 2, H, W) with (dx, dy) in dim -3")
    dx, dy = flow.unbind(-3)
    magnitude = torch.sqrt(dx**2 + dy**2)
    if max_magnitude is None:
        max_magnitude = float(magnitude.max()) if magnitude.numel() else 0.0
    elif max_magnitude <= 0:
        raise ValueError(f"max_magnitude must be positive, got {max_magnitude}")
    hue = torch.remainder(torch.atan2(dy, dx) / (2 * math.pi), 1.0)
    saturation = (magnitude / max_magnitude).clamp(max=1.0) if max_magnitude > 0 else torch.zeros_like(magnitude)
    return hsv_to_rgb(torch.stack([hue, saturation, torch.ones_like(hue)], -3))


def image_to_flow(image: Tensor, max_magnitude: float) -> Tensor:
    """Decode a flow image (..., 3, H, W) made by :func:`flow_to_image` back to flow (..., 2, H, W)."""
    _check_channels(image, 3, "flow image", "(..., 3, H, W) with RGB in dim -3")
    hue, saturation, _ = rgb_to_hsv(image).unbind(-3)
    magnitude = saturation * max_magnitude
    angle = 2 * math.pi * hue
    return torch.stack([magnitude * torch.cos(angle), magnitude * torch.sin(angle)], -3)


def jitter_flow_image(image: Tensor, rng: np.random.Generator) -> Tensor:
    """Jitter the hue and saturation of each flow image (..., 3, H, W), keeping its value.

    Per frame (every index of the leading dimensions): h ~ U(0.1, 0.5) and a hue shift
    ~ U[-h, h] turns; s ~ U(0.1, 1.0) and a saturation factor ~ U[1 - s, 1 + s], the result
    clipped to [0, 1]. Draws come from ``rng`` in a fixed order, so one seed gives one jitter.
    """
    _check_channels(image, 3, "flow image", "(..., 3, H, W) with RGB in dim -3")
    leading = image.shape[:-3]
    n_frames = math.prod(leading)
    bound = rng.uniform(*HUE_SHIFT_BOUND, size=n_frames)
    hue_shift = rng.uniform(-bound, bound)
    spread = rng.uniform(*SATURATION_SPREAD, size=n_frames)
    saturation_factor = rng.uniform(1 - spread, 1 + spread)

    def per_frame(values: np.ndarray) -> Tensor:
        return torch.as_tensor(values, dtype=image.dtype, device=image.device).reshape(*leading, 1, 1)

    hue, saturation, value = rgb_to_hsv(image).unbind(-3)
    hue = torch.remainder(hue + per_frame(hue_shift), 1.0)
    saturation = (saturation * per_frame(saturation_factor)).clamp(0.0, 1.0)
    return hsv_to_rgb(torch.stack([hue, saturation, value], -3))


def rgb_to_hsv(image: Tensor) -> Tensor:
    """RGB (..., 3, H, W) in [0, 1] to HSV (..., 3, H, W), hue in turns [0, 1)."""
    red, green, blue = image.unbind(-3)
    value, argmax = image.max(-3)
    chroma = value - image.min(-3).values
    safe_chroma = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    sector = torch.where(
        argmax == 0,
        torch.remainder((green - blue) / safe_chroma, 6.0),
        torch.where(argmax == 1, (blue - red) / safe_chroma + 2.0, (red - green) / safe_chroma + 4.0),
    )
    hue = torch.where(chroma > 0, torch.remainder(sector / 6.0, 1.0), torch.zeros_like(chroma))
    saturation = torch.where(value > 0, chroma / torch.where(value > 0, value, torch.ones_like(value)),
                             torch.zeros_like(value))
    return torch.stack([hue, saturation, value], -3)


def hsv_to_rgb(hsv: Tensor) -> Tensor:
    """HSV (..., 3, H, W), hue in turns, to RGB (..., 3, H, W)."""
    from stdyn.data.worlds.appearance import hsv_to_rgb as channels_last

    return channels_last(*hsv.unbind(-3)).movedim(-1, -3)


def farneback(clip: Tensor, **options: float) -> Tensor:
    """Dense optical flow (T - 1, 2, H, W), in pixels, between consecutive frames of a clip (3, T, H, W).

    Uses ``cv2.calcOpticalFlowFarneback`` on 8-bit grey frames; ``options`` override its
    parameters (pyr_scale, levels, winsize, iterations, poly_n, poly_sigma).
    """
    if not isinstance(clip, Tensor) or clip.dim() != 4 or clip.shape[0] != 3 or clip.shape[1] < 2:
        shape = tuple(clip.shape) if isinstance(clip, Tensor) else type(clip).__name__
        raise ValueError(f"expected a clip (3, T, H, W) with T >= 2 in [0, 1], got {shape}")
    params = {"pyr_scale": 0.5, "levels": 3, "winsize": 15, "iterations": 3, "poly_n": 5, "poly_sigma": 1.2}
    unknown = set(options) - set(params)
    if unknown:
        raise ValueError(f"unknown Farneback options {sorted(unknown)}; valid: {sorted(params)}")
    params.update(options)
    rgb = (clip.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 3, 0).cpu().numpy()
    import cv2  # imported here so that machines without OpenCV can still import stdyn

    grey = [cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY) for frame in rgb]
    flows = [
        cv2.calcOpticalFlowFarneback(prev, nxt, None, params["pyr_scale"], int(params["levels"]),
                                     int(params["winsize"]), int(params["iterations"]), int(params["poly_n"]),
                                     params["poly_sigma"], 0)
        for prev, nxt in zip(grey[:-1], grey[1:])
    ]
    return torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2).contiguous()


def _check_channels(x: Tensor, channels: int, what: str, layout: str) -> None:
    if not isinstance(x, Tensor) or x.dim() < 3 or x.shape[-3] != channels:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"expected a {what} shaped {layout}, got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"expected a floating-point {what}, got dtype {x.dtype}")
