"""Vectorised, anti-aliased drawing of the synthetic worlds (whole batches of clips at once).

Everything works in pixel units on a grid of pixel centres, so objects move with sub-pixel
precision: a shape's coverage of a pixel ramps linearly over one pixel of its signed distance,
which is a cheap box-filter approximation of the exact area. Shapes are signed distance
functions in object-local coordinates (the object's "radius" is 1), so rotating and scaling an
object is a change of coordinates.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

TextureFn = Callable[[Tensor, Tensor], Tensor]

SHAPES: tuple[str, ...] = ("ellipse", "rectangle", "triangle", "half_disc", "l_shape", "diamond")


def pixel_grid(size: int) -> tuple[Tensor, Tensor]:
    """Pixel-centre coordinates ``(x, y)``, each (size, size), in pixels (x right, y down)."""
    centres = torch.arange(size, dtype=torch.float32) + 0.5
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    return x, y


def coverage(distance_px: Tensor) -> Tensor:
    """Soft mask in [0, 1] from a signed distance in pixels (negative inside)."""
    return (0.5 - distance_px).clamp_(0.0, 1.0)


def _box(u: Tensor, v: Tensor, cu: float, cv: float, hu: float, hv: float) -> Tensor:
    qu, qv = (u - cu).abs() - hu, (v - cv).abs() - hv
    outside = torch.sqrt(qu.clamp(min=0) ** 2 + qv.clamp(min=0) ** 2)
    return outside + torch.maximum(qu, qv).clamp(max=0)


def _triangle(u: Tensor, v: Tensor) -> Tensor:
    # An isosceles "arrow" pointing along +u: the largest distance to its three edge lines
    # (exact inside, slightly rounded outside the corners, which only matters beyond a pixel).
    vertices = [(1.0, 0.0), (-0.7, 0.8), (-0.7, -0.8)]
    distance = None
    for (au, av), (bu, bv) in zip(vertices, vertices[1:] + vertices[:1]):
        nu, nv = bv - av, -(bu - au)  # outward normal for counter-clockwise order in (u, v)
        norm = math.hypot(nu, nv)
        edge = ((u - au) * nu + (v - av) * nv) / norm
        distance = edge if distance is None else torch.maximum(distance, edge)
    return distance


def shape_distance(shape: str, u: Tensor, v: Tensor) -> Tensor:
    """Signed distance (object units, negative inside) of a shape in local coordinates."""
    if shape == "ellipse":
        a, b = 1.0, 0.55
        return (torch.sqrt((u / a) ** 2 + (v / b) ** 2) - 1.0) * b
    if shape == "rectangle":
        return _box(u, v, 0.0, 0.0, 1.0, 0.5)
    if shape == "triangle":
        return _triangle(u, v)
    if shape == "half_disc":
        shifted = u + 0.42  # put the centre of mass at the origin
        return torch.maximum(torch.sqrt(shifted**2 + v**2) - 1.0, -shifted)
    if shape == "l_shape":
        return torch.minimum(_box(u, v, -0.55, 0.0, 0.3, 0.9), _box(u, v, 0.05, 0.6, 0.9, 0.3))
    if shape == "diamond":
        a, b = 1.0, 0.6
        return (u.abs() / a + v.abs() / b - 1.0) * (a * b / math.hypot(a, b))
    raise ValueError(f"unknown shape {shape!r}; shapes: {', '.join(SHAPES)}")


def homogeneous_grid(size: int) -> Tensor:
    """Rows ``x, y, 1, x^2 + y^2`` over the S*S pixel centres (4, S*S): affine and radial maps of
    the pixel grid become one matrix product."""
    x, y = (c.flatten() for c in pixel_grid(size))
    return torch.stack([x, y, torch.ones_like(x), x * x + y * y])


def grid_map(coefficients: Tensor, grid: Tensor) -> Tensor:
    """``coefficients`` (..., G) applied to every column of ``grid`` (G, P): (..., P), as one
    2-D matrix product (a batch of tiny matrices would be many times slower)."""
    flat = coefficients.reshape(-1, coefficients.shape[-1]) @ grid
    return flat.view(*coefficients.shape[:-1], grid.shape[-1])


def draw_objects(background: Tensor, shape: Tensor, colour: Tensor, cx: Tensor, cy: Tensor, radius: Tensor,
                 angle: Tensor, alpha: Tensor, texture: TextureFn | None = None,
                 second_colour: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Composite one moving object per clip over a static background.

    ``background`` (B, 3, S, S); ``shape`` (B,) indices into :data:`SHAPES`; ``colour`` (B, 3);
    ``cx, cy, radius`` (pixels), ``angle`` (radians, increasing = clockwise on screen) and
    ``alpha`` (opacity) are (B, T) per-frame poses. ``texture(u, v)`` returns, in the object's
    local coordinates (B, T, S*S), where it shows ``second_colour`` (B, 3) instead of ``colour``,
    so a texture moves, turns and scales with its object. Returns clips (B, 3, T, S, S) and the
    object's coverage (B, T, S, S).
    """
    size = background.shape[-1]
    u, v = local_coordinates(size, cx, cy, radius, angle)
    distance = torch.empty_like(u)
    for index, name in enumerate(SHAPES):
        rows = (shape == index).nonzero().squeeze(1)
        if len(rows):
            distance[rows] = shape_distance(name, u[rows], v[rows])
    mask = coverage(distance.mul_(radius[..., None])).mul_(alpha[..., None])
    clips = composite(background, colour, mask)
    if texture is not None and second_colour is not None:
        change = (second_colour - colour)[:, :, None, None]
        clips.view(*clips.shape[:3], -1).addcmul_(texture(u, v).mul_(mask)[:, None], change)
    return clips, mask.view(*mask.shape[:2], size, size)


def local_coordinates(size: int, cx: Tensor, cy: Tensor, radius: Tensor, angle: Tensor) -> tuple[Tensor, Tensor]:
    """Object-local coordinates ``(u, v) = rotate(-angle)(p - centre) / radius`` of every pixel
    centre p, each (B, T, S*S), for per-frame poses (B, T): an affine map of the grid."""
    cos, sin, inverse = angle.cos(), angle.sin(), 1.0 / radius
    affine = torch.stack([
        torch.stack([cos * inverse, sin * inverse, -(cos * cx + sin * cy) * inverse], -1),
        torch.stack([-sin * inverse, cos * inverse, (sin * cx - cos * cy) * inverse], -1),
    ], -2)  # (B, T, 2, 3)
    u, v = grid_map(affine, homogeneous_grid(size)[:3]).unbind(2)
    return u, v


def composite(background: Tensor, colour: Tensor, mask: Tensor) -> Tensor:
    """Clips (B, 3, T, S, S): ``background`` (B, 3, S, S) under a ``colour`` (B, 3) painted with
    coverage ``mask`` (B, T, S, S) or (B, T, S*S)."""
    batch, _, size, _ = background.shape
    flat = background.reshape(batch, 3, 1, -1)
    clips = torch.addcmul(flat, mask.reshape(batch, 1, mask.shape[1], -1), colour[:, :, None, None] - flat)
    return clips.view(batch, 3, -1, size, size)


def segment_distance(grid: Tensor, ax: Tensor, ay: Tensor, bx: Tensor, by: Tensor) -> Tensor:
    """Distance (pixels) from every pixel to segments from (ax, ay) to (bx, by).

    Endpoints are (..., K) for K segments; ``grid`` is :func:`homogeneous_grid`. Returns
    (..., K, S*S). Both the position along the segment and the squared distance to its start
    are affine in ``grid``, so all segments cost one matrix product.
    """
    ex, ey = bx - ax, by - ay
    length2 = (ex * ex + ey * ey).clamp(min=1e-9)
    zero, one = torch.zeros_like(ax), torch.ones_like(ax)
    along = torch.stack([ex / length2, ey / length2, -(ax * ex + ay * ey) / length2, zero], -1)
    to_start2 = torch.stack([-2 * ax, -2 * ay, ax * ax + ay * ay, one], -1)
    raw, start2 = grid_map(torch.stack([along, to_start2], -2), grid).unbind(-2)  # (..., K, P)
    clamped = raw.clamp(0.0, 1.0)
    # |p - a - t e|^2 = |p - a|^2 + |e|^2 t (t - 2 t_raw) for the clamped t (in place: the
    # buffers are large and reusing them is faster)
    correction = raw.mul_(-2.0).add_(clamped).mul_(clamped)
    distance2 = start2.addcmul_(correction, length2[..., None])
    return distance2.clamp_(min=0.0).sqrt_()


def to_uint8(clips: Tensor, noise_sigma: float | Tensor = 0.0, generator: torch.Generator | None = None) -> Tensor:
    """Quantise [0, 1] clips to uint8 (how worlds are stored), optionally adding independent
    per-pixel camera noise: uniform, zero mean, standard deviation ``noise_sigma`` (a number, or
    a tensor that broadcasts against ``clips``, e.g. one value per clip).

    The noise comes from random bytes (eight per 64-bit draw), which is several times cheaper
    than drawing a float per pixel.
    """
    out = clips.mul(255.0)
    sigma = torch.as_tensor(noise_sigma, dtype=out.dtype)
    if bool((sigma > 0).any()):
        words = torch.empty((out.numel() + 7) // 8, dtype=torch.int64)
        words.random_(-(2**63), None, generator=generator)
        noise = words.view(torch.int8)[: out.numel()].view(out.shape).to(out.dtype)  # uniform on -128..127
        scale = sigma * (255.0 / BYTE_STD)
        out.add_((noise + 0.5) * scale)  # + 0.5: the bytes' mean is -0.5
    return out.add_(0.5).clamp_(0.0, 255.0).to(torch.uint8)  # +0.5 then truncation = rounding


BYTE_STD = math.sqrt((256**2 - 1) / 12)  # standard deviation of a uniform random byte
