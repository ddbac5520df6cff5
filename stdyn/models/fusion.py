"""Fusion layers of two-stream (appearance + motion) video object segmentation models.

Each layer takes the appearance features ``U_a`` and the motion features ``U_m`` of one encoder
stage, both (B, c, H, W), and returns fused features (B, c, H, W). The two attention-based layers
follow the fusion study of the paper (Sec. 5.3, eqs. 5-8), which splits both into channel
attention followed by spatial attention:

- :class:`GatedFusion` (``"G"``, MATNet; eqs. 6 and 8). ``U = U_a ⊕ U_m`` (concatenation, 2c
  channels), ``A_c = F_e(F_s(U))`` in R^2c, ``Z = A_c ∘ U``; then ``Z = A_sp ∘ Z + Z`` with
  ``A_sp = sigmoid(conv(Z))``; a 1x1 convolution (BN, ReLU) brings Z back to c channels. Nothing
  ties the weight of one stream to the weight of the other.
- :class:`ConvexGatedFusion` (``"CCG"``, RTNet; eqs. 5 and 7). ``A_c = F_e(F_s(U_a ⊕ U_m))`` in
  R^c, ``Z_a = A_c ∘ U_a``, ``Z_m = (1 - A_c) ∘ U_m``; then
  ``A_sp = sigmoid(conv(pool(Z_a) ⊕ pool(Z_m)))`` (pool: the channel-wise average, one map per
  stream) and ``Z = A_sp ∘ Z_a + (1 - A_sp) ∘ Z_m``. Each step is a convex combination of the
  streams: the channel weights of the two streams sum to one per channel, the spatial weights to
  one per pixel.

Two plain layers without attention serve FusionSeg-like models and ablations:
:class:`ConcatFusion` (``"concat"``: ``U_a ⊕ U_m``, 1x1 convolution, BN, ReLU) and
:class:`SumFusion` (``"sum"``: ``U_a + U_m``, no parameters).

``F_s`` (squeeze) is global average pooling and ``F_e`` (excitation) two fully connected layers
(reduction ``reduction``, ReLU between) and a sigmoid: :class:`SqueezeExcitation`.

Every attention layer keeps the weights of its last forward pass (detached) in
``last_attention`` (``{"channel": (B, C, 1, 1), "spatial": (B, 1, H, W)}``), and exposes its two
steps as methods (``channel_step``, ``spatial_step``) so that the weights can be read off.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = [
    "FUSIONS",
    "ConcatFusion",
    "ConvexGatedFusion",
    "GatedFusion",
    "SqueezeExcitation",
    "SumFusion",
    "make_fusion",
]


def _check_pair(ua: Tensor, um: Tensor, channels: int) -> None:
    if ua.dim() != 4 or ua.shape != um.shape or ua.shape[1] != channels:
        raise ValueError(
            f"expected appearance and motion features both shaped (B, {channels}, H, W), "
            f"got {tuple(ua.shape)} and {tuple(um.shape)}"
        )


class SqueezeExcitation(nn.Module):
    """Channel attention ``sigmoid(F_e(F_s(x)))``: (B, in_channels, H, W) -> (B, out_channels, 1, 1).

    ``F_s`` averages over space; ``F_e`` is ``fc1`` (in -> max(in // reduction, min_hidden)),
    ReLU, ``fc2`` (-> out).
    """

    def __init__(self, in_channels: int, out_channels: int, reduction: int = 4, min_hidden: int = 4) -> None:
        super().__init__()
        if reduction < 1:
            raise ValueError(f"reduction must be >= 1, got {reduction}")
        hidden = max(in_channels // reduction, min_hidden)
        self.fc1 = nn.Linear(in_channels, hidden)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(hidden, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        squeezed = x.mean(dim=(2, 3))
        return torch.sigmoid(self.fc2(self.relu(self.fc1(squeezed))))[:, :, None, None]


def _conv_bn_relu(in_channels: int, out_channels: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


class GatedFusion(nn.Module):
    """MATNet's gated fusion ("G", eqs. 6 and 8): unconstrained channel and spatial attention over
    the concatenated streams, then a ``out_kernel`` x ``out_kernel`` convolution (BN, ReLU) back to
    ``channels``.

    ``channel_step(U_a, U_m)`` returns ``(Z, A_c)`` with ``Z = A_c ∘ (U_a ⊕ U_m)`` (2c channels);
    ``spatial_step(Z)`` returns ``(A_sp ∘ Z + Z, A_sp)``; ``forward`` is ``project`` of the latter.
    The weight of appearance channel i is ``A_c[i]`` and of motion channel i ``A_c[c + i]``: two
    independent sigmoids, so they need not sum to one; the spatial gain ``1 + A_sp`` lies in
    [1, 2] per pixel.
    """

    def __init__(self, channels: int, reduction: int = 4, spatial_kernel: int = 3, out_kernel: int = 1) -> None:
        super().__init__()
        if spatial_kernel % 2 == 0 or out_kernel % 2 == 0:
            raise ValueError("spatial_kernel and out_kernel must be odd")
        self.channels = channels
        self.channel_attention = SqueezeExcitation(2 * channels, 2 * channels, reduction)
        self.spatial_attention = nn.Conv2d(2 * channels, 1, spatial_kernel, padding=spatial_kernel // 2)
        self.project = _conv_bn_relu(2 * channels, channels, out_kernel)
        self.last_attention: dict[str, Tensor] = {}

    def channel_step(self, ua: Tensor, um: Tensor) -> tuple[Tensor, Tensor]:
        """Eq. 6: ``U = U_a ⊕ U_m``, ``A_c = F_e(F_s(U))`` (B, 2c, 1, 1), ``Z = A_c ∘ U``."""
        _check_pair(ua, um, self.channels)
        u = torch.cat([ua, um], dim=1)
        a_c = self.channel_attention(u)
        return a_c * u, a_c

    def spatial_step(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Eq. 8: ``A_sp = sigmoid(conv(Z))`` (B, 1, H, W), ``Z = A_sp ∘ Z + Z``."""
        a_sp = torch.sigmoid(self.spatial_attention(z))
        return a_sp * z + z, a_sp

    def forward(self, ua: Tensor, um: Tensor) -> Tensor:
        z, a_c = self.channel_step(ua, um)
        z, a_sp = self.spatial_step(z)
        self.last_attention = {"channel": a_c.detach(), "spatial": a_sp.detach()}
        return self.project(z)

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


class ConvexGatedFusion(nn.Module):
    """RTNet's convex-combination gated fusion ("CCG", eqs. 5 and 7): per channel, then per pixel,
    a convex combination of the appearance and the motion features (output: ``channels``).

    ``channel_step(U_a, U_m)`` returns ``(Z_a, Z_m, A_c)`` with ``A_c`` (B, c, 1, 1) from the
    squeeze-and-excitation of ``U_a ⊕ U_m``, ``Z_a = A_c ∘ U_a``, ``Z_m = (1 - A_c) ∘ U_m``;
    ``spatial_step(Z_a, Z_m)`` returns ``(Z, A_sp)`` with ``A_sp = sigmoid(conv(pool(Z_a) ⊕
    pool(Z_m)))`` (B, 1, H, W), pool being the average over channels, and
    ``Z = A_sp ∘ Z_a + (1 - A_sp) ∘ Z_m``.

    Eq. 7 prints ``A_sp ∘ Z_a ⊕ (1 - A_sp) ∘ Z_m``. We combine the two weighted maps by a *sum*,
    not a concatenation: the paper's point is that the weights of the two streams are tied to sum
    to one ("restricts the attention weights between both motion and appearance features"); a
    concatenation would hand both weighted maps to the next layer separately, which could undo
    any tie by rescaling, and would double the channels, whereas RTNet's fused features keep the
    c channels of one stream. With the sum, every fused feature is a convex combination of the
    two streams' (channel-weighted) features, pixel by pixel. (The weights of the whole layer,
    ``A_sp A_c`` on ``U_a`` and ``(1 - A_sp)(1 - A_c)`` on ``U_m``, do not sum to one; each step's
    do.) No convolution follows, so the layer's output is that convex combination itself.
    """

    def __init__(self, channels: int, reduction: int = 4, spatial_kernel: int = 3) -> None:
        super().__init__()
        if spatial_kernel % 2 == 0:
            raise ValueError("spatial_kernel must be odd")
        self.channels = channels
        self.channel_attention = SqueezeExcitation(2 * channels, channels, reduction)
        self.spatial_attention = nn.Conv2d(2, 1, spatial_kernel, padding=spatial_kernel // 2)
        self.last_attention: dict[str, Tensor] = {}

    def channel_step(self, ua: Tensor, um: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Eq. 5: ``A_c = F_e(F_s(U_a ⊕ U_m))`` (B, c, 1, 1), ``Z_a = A_c ∘ U_a``, ``Z_m = (1 - A_c) ∘ U_m``."""
        _check_pair(ua, um, self.channels)
        a_c = self.channel_attention(torch.cat([ua, um], dim=1))
        return a_c * ua, (1 - a_c) * um, a_c

    def spatial_step(self, za: Tensor, zm: Tensor) -> tuple[Tensor, Tensor]:
        """Eq. 7: ``A_sp = sigmoid(conv(pool(Z_a) ⊕ pool(Z_m)))``, ``Z = A_sp ∘ Z_a + (1 - A_sp) ∘ Z_m``."""
        pooled = torch.cat([za.mean(dim=1, keepdim=True), zm.mean(dim=1, keepdim=True)], dim=1)
        a_sp = torch.sigmoid(self.spatial_attention(pooled))
        return a_sp * za + (1 - a_sp) * zm, a_sp

    def forward(self, ua: Tensor, um: Tensor) -> Tensor:
        za, zm, a_c = self.channel_step(ua, um)
        z, a_sp = self.spatial_step(za, zm)
        self.last_attention = {"channel": a_c.detach(), "spatial": a_sp.detach()}
        return z

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


class ConcatFusion(nn.Module):
    """Plain fusion: ``U_a ⊕ U_m``, a ``kernel`` x ``kernel`` convolution, BN, ReLU (back to
    ``channels``). The G layer without its attention; FusionSeg's way of merging two streams
    by learned weights, at feature level."""

    def __init__(self, channels: int, kernel: int = 1) -> None:
        super().__init__()
        self.channels = channels
        self.project = _conv_bn_relu(2 * channels, channels, kernel)

    def forward(self, ua: Tensor, um: Tensor) -> Tensor:
        _check_pair(ua, um, self.channels)
        return self.project(torch.cat([ua, um], dim=1))

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


class SumFusion(nn.Module):
    """``U_a + U_m``: the parameter-free fusion."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, ua: Tensor, um: Tensor) -> Tensor:
        _check_pair(ua, um, self.channels)
        return ua + um

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


FUSIONS: dict[str, Callable[..., nn.Module]] = {
    "G": GatedFusion,
    "CCG": ConvexGatedFusion,
    "concat": ConcatFusion,
    "sum": SumFusion,
}
"""Fusion layers by name: ``"G"`` (MATNet), ``"CCG"`` (RTNet), ``"concat"``, ``"sum"``."""


def make_fusion(kind: str, channels: int, reduction: int = 4, spatial_kernel: int = 3) -> nn.Module:
    """The fusion layer ``kind`` (a key of :data:`FUSIONS`) for two streams of ``channels`` each."""
    if kind not in FUSIONS:
        raise ValueError(f"unknown fusion {kind!r}; choose one of {', '.join(FUSIONS)}")
    if kind in ("G", "CCG"):
        return FUSIONS[kind](channels, reduction=reduction, spatial_kernel=spatial_kernel)
    return FUSIONS[kind](channels)
