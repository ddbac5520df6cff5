"""Train-time appearance randomisation: random, temporally constant changes of whole clips.

Natural videos show every motion in countless colours, textures and lighting conditions, so a
network trained on them keeps recognising a motion when a video is restyled. The synthetic worlds
already draw every clip's look from a broad distribution; training adds more of the same variety
on top, so that a model seldom sees one clip twice in the same colours: a random rotation or
reflection of colour space (which includes hue shifts, channel swaps and inversions), a common
contrast factor, per-channel gamma, a lighting gradient, and a faint static grain (a smooth random
pattern multiplied into every frame). It shares no code with the measurement styles of
:mod:`stdyn.core.stylize`, and of them only the pointwise colour map (``thermal``) lies inside
its family; the styles that redraw edges or texture are never seen in training.

One change is drawn per clip and applied identically to all its frames, so motion is untouched. :class:`AppearanceJitter` draws the parameters of every clip of a dataset from one seed
and an index, so the result does not depend on batch size or the number of processes.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor

_GAMMA_LOG_RANGE = 0.5  # per-channel gamma in [e^-0.5, e^0.5] = [0.6, 1.65]
_CONTRAST = (0.7, 1.4)  # factor on all colour differences
_MEAN = (0.3, 0.7)  # range of each channel's new clip mean
_LIGHT = 0.3  # largest slope of the lighting gradient (factor 1 +- 0.3 at the frame's edges)
_GRAIN = 0.15  # largest amplitude of the static grain
_GRAIN_CELLS = 4  # the grain is smooth noise on a 4x4 grid, interpolated to the frame


@dataclass(frozen=True)
class Recolouring:
    """Per-clip parameters (first dimension: clips) of :func:`recolour`."""

    rotation: Tensor  # (N, 3, 3) orthogonal map of centred RGB (rotations and reflections)
    gamma: Tensor  # (N, 3) per-channel exponents
    contrast: Tensor  # (N,) factor on colour differences
    mean: Tensor  # (N, 3) the clip's new mean colour
    light: Tensor  # (N, 2) lighting gradient (slope along x, along y)
    grain: Tensor  # (N, cells, cells) static grain, already scaled by its amplitude
    active: Tensor  # (N,) bool: clips left as they are have False

    @classmethod
    def draw(cls, n: int, probability: float, generator: torch.Generator) -> Recolouring:
        """Random parameters for ``n`` clips, each recoloured with ``probability``."""
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"appearance probability must lie in [0, 1], got {probability}")

        def uniform(*shape: int) -> Tensor:
            return torch.rand(*shape, generator=generator)

        # QR of a Gaussian matrix, signs fixed by R's diagonal: uniform over the orthogonal group.
        q, r = torch.linalg.qr(torch.randn(n, 3, 3, generator=generator))
        rotation = q * torch.sign(torch.diagonal(r, dim1=1, dim2=2))[:, None, :]
        gamma = torch.exp((2 * uniform(n, 3) - 1) * _GAMMA_LOG_RANGE)
        contrast = _CONTRAST[0] + (_CONTRAST[1] - _CONTRAST[0]) * uniform(n)
        mean = _MEAN[0] + (_MEAN[1] - _MEAN[0]) * uniform(n, 3)
        angle = 2 * torch.pi * uniform(n)
        light = _LIGHT * uniform(n)[:, None] * torch.stack([angle.cos(), angle.sin()], 1)
        grain = _GRAIN * uniform(n)[:, None, None] * (2 * uniform(n, _GRAIN_CELLS, _GRAIN_CELLS) - 1)
        active = uniform(n) < probability
        return cls(rotation, gamma, contrast, mean, light, grain, active)

    def select(self, indices: Tensor) -> Recolouring:
        """The parameters of the clips ``indices``."""
        return Recolouring(*(getattr(self, f.name)[indices] for f in fields(self)))

    def to(self, device: torch.device) -> Recolouring:
        return Recolouring(*(getattr(self, f.name).to(device) for f in fields(self)))


def recolour(clips: Tensor, params: Recolouring) -> Tensor:
    """Clips (B, 3, T, H, W) in [0, 1] changed by ``params`` (B clips); inactive ones unchanged.

    An orthogonal map keeps every colour difference, so what stood out (a moving object against
    its scene) still stands out, and faint noise stays faint (a per-channel stretch would
    amplify it in channels where the clip has little contrast); a common contrast factor, a new
    mean colour and per-channel gamma then change brightness and contrast, and the lighting
    gradient and grain (the same in every frame) change it from place to place.
    """
    if clips.dim() != 5 or clips.shape[1] != 3:
        raise ValueError(f"expected clips (B, 3, T, H, W), got shape {tuple(clips.shape)}")
    if not params.active.all():  # work on the recoloured clips only
        active = params.active.nonzero()[:, 0]
        out = clips.clone()
        if len(active):
            out[active.to(clips.device)] = recolour(clips[active.to(clips.device)], params.select(active))
        return out
    params = params.to(clips.device)
    centred = clips - clips.mean((2, 3, 4), keepdim=True)
    rotated = torch.einsum("bij,bjthw->bithw", params.rotation.to(clips.dtype), centred)
    shifted = params.mean[..., None, None, None] + params.contrast.view(-1, 1, 1, 1, 1) * rotated
    out = shifted.clamp(0, 1) ** params.gamma[..., None, None, None]
    height, width = clips.shape[-2:]
    y = torch.linspace(-0.5, 0.5, height, device=clips.device)[:, None]
    x = torch.linspace(-0.5, 0.5, width, device=clips.device)[None, :]
    light = 1 + 2 * (params.light[:, 0, None, None] * x + params.light[:, 1, None, None] * y)  # (B, H, W)
    grain = F.interpolate(params.grain[:, None], size=(height, width), mode="bicubic", align_corners=True)[:, 0]
    out = (out * (light * (1 + grain))[:, None, None]).clamp(0, 1)
    return out.to(clips.dtype)


class AppearanceJitter:
    """Recolours batches of one dataset: clip ``i`` in epoch ``e`` always gets the same recolouring,
    drawn from ``(seed, e)`` whatever the batch composition."""

    def __init__(self, n_clips: int, probability: float, generator: torch.Generator) -> None:
        self.params = Recolouring.draw(n_clips, probability, generator)

    def __call__(self, clips: Tensor, indices: Tensor) -> Tensor:
        return recolour(clips, self.params.select(indices.cpu()))
