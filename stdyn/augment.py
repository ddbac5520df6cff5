"""Train-time appearance randomisation: random, temporally constant recolourings of whole clips.

Natural videos show every motion in countless colours, textures and lighting conditions, so a
network trained on them keeps recognising a motion when a video is restyled. The synthetic worlds
draw objects and scenes from a few dozen colours, and a network trained on them alone is lost on
the stylized clips that dynamic pairs are made of. Training with random recolourings gives back
that variety. None of them is one of the four measurement styles of :mod:`stdyn.stylize`: the
styles equalise luminance and then posterise, outline, sketch or map it through fixed colour
tables, whereas a recolouring here is a random rotation or reflection of colour space (which
includes hue shifts, channel swaps and inversions) followed by per-channel contrast and gamma.

One recolouring is drawn per clip and applied identically to all its frames, so motion is
untouched. :class:`AppearanceJitter` draws the parameters of every clip of a dataset from one seed
and an index, so the result does not depend on batch size or the number of processes.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor


_GAMMA_LOG_RANGE = 0.5  # per-channel gamma in [e^-0.5, e^0.5] = [0.6, 1.65]
_CONTRAST = (0.7, 1.4)  # factor on all colour differences
_MEAN = (0.3, 0.7)  # range of each channel's new clip mean


@dataclass(frozen=True)
class Recolouring:
    """Per-clip parameters (first dimension: clips) of :func:`recolour`."""

    rotation: Tensor  # (N, 3, 3) orthogonal map of centred RGB (rotations and reflections)
    gamma: Tensor  # (N, 3) per-channel exponents
    contrast: Tensor  # (N,) factor on colour differences
    mean: Tensor  # (N, 3) the clip's new mean colour
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
        active = uniform(n) < probability
        return cls(rotation, gamma, contrast, mean, active)

    def select(self, indices: Tensor) -> Recolouring:
        """The parameters of the clips ``indices``."""
        return Recolouring(*(getattr(self, f.name)[indices] for f in fields(self)))

    def to(self, device: torch.device) -> Recolouring:
        return Recolouring(*(getattr(self, f.name).to(device) for f in fields(self)))


def recolour(clips: Tensor, params: Recolouring) -> Tensor:
    """Clips (B, 3, T, H, W) in [0, 1] recoloured by ``params`` (B clips); inactive ones unchanged.

    An orthogonal map keeps every colour difference, so what stood out (a moving object against
    its scene) still stands out, and faint noise stays faint (a per-channel stretch would
    amplify it in channels where the clip has little contrast); a common contrast factor, a new
    mean colour and per-channel gamma then change brightness and contrast.
    """
    if clips.dim() != 5 or clips.shape[1] != 3:
        raise ValueError(f"expected clips (B, 3, T, H, W), got shape {tuple(clips.shape)}")
    params = params.to(clips.device)
    centred = clips - clips.mean((2, 3, 4), keepdim=True)
    rotated = torch.einsum("bij,bjthw->bithw", params.rotation.to(clips.dtype), centred)
    shifted = params.mean[..., None, None, None] + params.contrast.view(-1, 1, 1, 1, 1) * rotated
    out = shifted.clamp(0, 1) ** params.gamma[..., None, None, None]
    return torch.where(params.active.view(-1, 1, 1, 1, 1), out.to(clips.dtype), clips)


class AppearanceJitter:
    """Recolours batches of one dataset: clip ``i`` in epoch ``e`` always gets the same recolouring,
    drawn from ``(seed, e)`` whatever the batch composition."""

    def __init__(self, n_clips: int, probability: float, generator: torch.Generator) -> None:
        self.params = Recolouring.draw(n_clips, probability, generator)

    def __call__(self, clips: Tensor, indices: Tensor) -> Tensor:
        return recolour(clips, self.params.select(indices.cpu()))
