"""Pieces every model shares: stage descriptions, input checks, normalisation, the classifier head."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

KINETICS_MEAN = (0.45, 0.45, 0.45)
KINETICS_STD = (0.225, 0.225, 0.225)

# Values a little outside [0, 1] come from resampling and rounding; anything further is a
# sign that the clip was already normalised or is in 0..255.
_RANGE_TOLERANCE = 0.05


@dataclass(frozen=True)
class Stage:
    """A measurable point of a model: the output of module ``name`` (a path in ``named_modules()``).

    The output is (B, C, T, H, W), (B, C, H, W) or tokens (B, N, C), with ``channels`` = C.
    ``kind`` groups stages for plots: "stage", "slow", "fast", "block".
    """

    name: str
    channels: int
    kind: str = "stage"


def check_clips(clips: Tensor, what: str = "clips", check_range: bool = True) -> None:
    """Raise a ValueError unless ``clips`` is a float batch (B, 3, T, H, W) with values in [0, 1]."""
    layout = "a float batch of clips shaped (B, 3, T, H, W) with values in [0, 1]"
    if not isinstance(clips, Tensor):
        raise TypeError(f"{what}: expected {layout}, got {type(clips).__name__}")
    if clips.ndim != 5 or clips.shape[1] != 3:
        hint = ""
        if clips.ndim == 4:
            hint = " (a single clip (3, T, H, W)? add a batch dimension with clips.unsqueeze(0))"
        elif clips.ndim == 5 and clips.shape[2] == 3:
            hint = " (frames first? use clips.transpose(1, 2) to go from (B, T, 3, H, W) to (B, 3, T, H, W))"
        raise ValueError(f"{what}: expected {layout}, got shape {tuple(clips.shape)}{hint}")
    if not clips.is_floating_point():
        raise ValueError(
            f"{what}: expected {layout}, got dtype {clips.dtype} (convert with clips.float() / 255)"
        )
    if check_range and clips.numel():
        low, high = torch.aminmax(clips.detach())
        if low < -_RANGE_TOLERANCE or high > 1 + _RANGE_TOLERANCE:
            raise ValueError(
                f"{what}: expected {layout}, got values in [{low.item():.3g}, {high.item():.3g}]; "
                "models normalise inside, so pass un-normalised clips scaled to [0, 1]"
            )


class Normalize(nn.Module):
    """The fixed first layer: checks the layout of a [0, 1] batch and normalises it per colour channel.

    Mean and std are non-persistent buffers, so they never appear in a state dict. With
    ``channels_last`` the output is in ``torch.channels_last_3d`` memory format, which the
    convolutions that follow keep (2-3x faster 3D and depthwise convolutions on CPU).
    """

    def __init__(
        self,
        mean: Sequence[float] = KINETICS_MEAN,
        std: Sequence[float] = KINETICS_STD,
        check_range: bool = True,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1, 1), persistent=False)
        self.check_range = check_range
        self.channels_last = channels_last

    def forward(self, clips: Tensor) -> Tensor:
        check_clips(clips, check_range=self.check_range)
        normalized = (clips - self.mean) / self.std
        if self.channels_last:
            normalized = normalized.contiguous(memory_format=torch.channels_last_3d)
        return normalized

    def extra_repr(self) -> str:
        text = f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"
        return text + (", channels_last=True" if self.channels_last else "")


class TemporalSubsample(nn.Module):
    """Keep every ``stride``-th frame of (B, C, T, H, W): the low frame rate of a slow pathway."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        if stride < 1:
            raise ValueError(f"frame stride must be >= 1, got {stride}")
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        return x[:, :, :: self.stride] if self.stride > 1 else x

    def extra_repr(self) -> str:
        return f"stride={self.stride}"


class GlobalAvgPool(nn.Module):
    """Average over everything but batch and channels: (B, C, ...) or tokens (B, N, C) -> (B, C).

    A list of tensors (one per pathway) is pooled one by one and concatenated along channels.
    """

    def __init__(self, tokens: bool = False) -> None:
        super().__init__()
        self.tokens = tokens

    def forward(self, features: Tensor | Sequence[Tensor]) -> Tensor:
        if isinstance(features, Tensor):
            return self._pool(features)
        return torch.cat([self._pool(f) for f in features], dim=1)

    def _pool(self, x: Tensor) -> Tensor:
        if self.tokens:
            return x.mean(dim=1)
        return x.flatten(2).mean(dim=2)

    def extra_repr(self) -> str:
        return "tokens=True" if self.tokens else ""


class ClassifierHead(nn.Module):
    """Global average pool (``pool``), dropout (``dropout``), linear classifier (``fc``).

    ``pool`` is its own module so that the pooled (B, C) features can be measured by name
    (``head.pool``) and ``dropout`` can be swapped for another channel dropout.
    """

    def __init__(
        self, in_channels: int, num_classes: int, dropout: float = 0.0, tokens: bool = False
    ) -> None:
        super().__init__()
        self.pool = GlobalAvgPool(tokens=tokens)
        self.dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_channels, num_classes)

    def features(self, x: Tensor | Sequence[Tensor]) -> Tensor:
        """The pooled (B, C) features the classifier sees."""
        return self.pool(x)

    def forward(self, x: Tensor | Sequence[Tensor]) -> Tensor:
        return self.fc(self.dropout(self.pool(x)))


def init_weights(model: nn.Module) -> None:
    """He init for convolutions, unit/zero batch norms, small normal for linear layers."""
    for module in model.modules():
        if isinstance(module, (nn.Conv3d, nn.Conv2d)):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm3d, nn.BatchNorm2d, nn.LayerNorm)):
            if module.weight is not None:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def output_channels(module: nn.Module) -> int | None:
    """Channels of a module's output, read from its last layer with a width (None if it has none)."""
    for layer in reversed(list(module.modules())):
        if isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return layer.out_channels
        if isinstance(layer, nn.Linear):
            return layer.out_features
        if isinstance(layer, nn.modules.batchnorm._NormBase):
            return layer.num_features
        if isinstance(layer, nn.GroupNorm):
            return layer.num_channels
        if isinstance(layer, nn.LayerNorm):
            return layer.normalized_shape[-1]
    return None
