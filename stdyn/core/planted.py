"""A hand-built network whose channels are known to be static, dynamic, joint, residual or dead.

It validates the whole public pipeline (pairs, probe, estimator) on a case where the right
answer is known by construction, something no trained network can offer. Its input is a clip
of one textured object moving in a straight line over a still textured background
(:func:`moving_object_clips`); its ``readout`` layer computes, with fixed operations:

- static channels: the clip's mean colour. Frame order does not change it; restyling does.
- dynamic channels: the object's velocity, read from where consecutive frames differ (the
  background is still, so only the object changes). Restyling keeps it; shuffling frames
  scrambles it.
- joint channels: the object's mean position, which survives both restyling and shuffling.
- residual channels: a pseudo-random hash of the frame-ordered pixels, which neither survives.
- dead channels: constant zero.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from stdyn.core.estimator import Estimate, PairStats, categorize

PLANTED = ("static",) * 3 + ("dynamic",) * 4 + ("joint",) * 4 + ("residual",) * 4 + ("dead",) * 2


def _smooth_noise(generator: torch.Generator, n: int, size: int, cells: int) -> torch.Tensor:
    """Coloured value noise (n, 3, size, size) in [0, 1]: random colours on a coarse grid, upsampled."""
    coarse = torch.rand(n, 3, cells, cells, generator=generator)
    return nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


def moving_object_clips(n: int, *, frames: int = 16, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Clips (n, 3, frames, size, size) in [0, 1]: a textured square moving at constant velocity.

    Background, object texture, start position and velocity are drawn per clip from ``seed``.
    """
    g = torch.Generator().manual_seed(seed)
    background = _smooth_noise(g, n, size, 4)
    texture = _smooth_noise(g, n, size, 3)
    half = size / 8
    speed = size / (2.5 * frames)  # px per frame, so the path stays inside the frame
    velocity = (torch.rand(n, 2, generator=g) * 2 - 1) * speed
    travel = velocity * (frames - 1)
    margin = half + 1
    low = margin - torch.minimum(travel, torch.zeros_like(travel))
    high = size - margin - torch.maximum(travel, torch.zeros_like(travel))
    start = low + torch.rand(n, 2, generator=g) * (high - low).clamp(min=0)
    t = torch.arange(frames, dtype=torch.float32)
    centre = start[:, None, :] + velocity[:, None, :] * t[None, :, None]  # (n, T, 2): x, y
    grid = torch.arange(size, dtype=torch.float32) + 0.5
    # Soft square edges give sub-pixel motion.
    inside_x = torch.sigmoid(3 * (half - (grid[None, None, :] - centre[..., 0:1]).abs()))  # (n, T, W)
    inside_y = torch.sigmoid(3 * (half - (grid[None, None, :] - centre[..., 1:2]).abs()))  # (n, T, H)
    mask = (inside_y[..., :, None] * inside_x[..., None, :])[:, None]  # (n, 1, T, H, W)
    clips = background[:, :, None] * (1 - mask) + texture[:, :, None] * mask
    return clips.clamp(0, 1)


class PlantedNet(nn.Module):
    """Fixed features with known categories (``self.planted``); measure layer ``readout``."""

    def __init__(self) -> None:
        super().__init__()
        self.readout = nn.Identity()
        self.planted = list(PLANTED)
        from stdyn.models import Stage

        self.stages = [Stage("readout", len(PLANTED), "planted")]

    @staticmethod
    def _difference_centroids(x: torch.Tensor) -> torch.Tensor:
        """(B, T-1, 2) centroid (x, y) of where each frame differs from the one before."""
        energy = (x[:, :, 1:] - x[:, :, :-1]).abs().sum(1)  # (B, T-1, H, W)
        weights = energy / energy.sum((-2, -1), keepdim=True).clamp_min(1e-12)
        grid = torch.arange(x.shape[-1], dtype=x.dtype, device=x.device)
        cx = (weights.sum(-2) * grid).sum(-1)
        cy = (weights.sum(-1) * grid[: x.shape[-2]]).sum(-1)
        return torch.stack([cx, cy], -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or x.shape[1] != 3 or x.shape[2] < 3:
            raise ValueError(f"PlantedNet expects clips (B, 3, T>=3, H, W), got {tuple(x.shape)}")
        colour = x.mean((2, 3, 4))  # (B, 3)
        centroids = self._difference_centroids(x)
        velocity = (centroids[:, -1] - centroids[:, 0]) / (centroids.shape[1] - 1)
        position = centroids.mean(1)
        vx, vy = velocity.unbind(-1)
        px, py = position.unbind(-1)
        t = torch.arange(x.shape[2], dtype=x.dtype, device=x.device)
        ordered = (x.mean((1, 3, 4)) * (t + 1)).sum(1)  # depends on frame order and on every pixel
        hashes = [torch.sin(1e4 * ordered * math.sqrt(k)) for k in (2, 3, 5, 7)]
        zero = torch.zeros_like(vx)
        features = torch.stack(
            [*colour.unbind(-1), vx, vy, vx + vy, vx - vy, px, py, px + py, px - py, *hashes, zero, zero],
            dim=1,
        )
        return self.readout(features)


def recovery(stats: PairStats, planted: Sequence[str], threshold: float = 0.5) -> Estimate:
    """Percent of channels whose measured category (at ``threshold``) is their planted one, with
    a replicate per bootstrap replicate of ``stats`` (e.g. ``measurement.stats["readout"]``)."""
    if len(planted) != stats.n_channels:
        raise ValueError(f"{len(planted)} planted categories for {stats.n_channels} channels")
    scores = stats.unit_scores()
    categories = categorize(scores["static"], scores["dynamic"], threshold, stats.dead_channels())
    percent = 100.0 * (categories == np.asarray(planted, dtype=object)).mean(1)
    return Estimate(float(percent[0]), percent[1:])
