"""A small X3D: depthwise-separable 3D bottlenecks with channel expansion.

As in X3D (Feichtenhofer, 2020): the stem is a 1x3x3 convolution followed by a depthwise 5x1x1
one; each block expands with a 1x1x1 convolution (``expansion`` x its width), filters with a
depthwise 3x3x3 convolution, squeezes-and-excites (every other block), applies Swish and projects
back with a 1x1x1 convolution. After stage5 a 1x1x1 convolution expands the channels again
before pooling. The depthwise convolutions are :class:`~stdyn.models.layers.DepthwiseConv3d`,
whose backward pass is several times faster on the CPU.
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from stdyn.models.action.cnn3d import ResidualBlock, conv_bn, shortcut, zero_init_residuals
from stdyn.models.layers import ClassifierHead, Normalize, Stage, TemporalSubsample, init_weights

SE_RATIO = 1 / 16
MIN_SE_CHANNELS = 8


class SqueezeExcite(nn.Module):
    """Channel gates from globally pooled features."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = max(MIN_SE_CHANNELS, round(channels * SE_RATIO))
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool3d(1),
            nn.Conv3d(channels, hidden, 1),
            nn.ReLU(),
            nn.Conv3d(hidden, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(x)


class X3DBlock(ResidualBlock):
    """1x1x1 expand, depthwise 3x3x3 (+ SE), Swish, 1x1x1 project."""

    def __init__(
        self, in_channels: int, inner_channels: int, out_channels: int, stride: int, use_se: bool
    ) -> None:
        super().__init__()
        depthwise: list[nn.Module] = [
            conv_bn(
                inner_channels, inner_channels, (3, 3, 3), (1, stride, stride), groups=inner_channels, activation=None
            )
        ]
        if use_se:
            depthwise.append(SqueezeExcite(inner_channels))
        depthwise.append(nn.SiLU())
        self.branch = nn.Sequential(
            conv_bn(in_channels, inner_channels, (1, 1, 1)),
            nn.Sequential(*depthwise),
            conv_bn(inner_channels, out_channels, (1, 1, 1), activation=None),
        )
        self.shortcut = shortcut(in_channels, out_channels, stride)


class X3DStem(nn.Module):
    """stage1: 1x3x3 convolution (spatial stride 2), then a depthwise 5x1x1 convolution, BN, ReLU."""

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.spatial = nn.Conv3d(3, out_channels, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), bias=False)
        self.temporal = conv_bn(out_channels, out_channels, (5, 1, 1), groups=out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.temporal(self.spatial(x))


class X3D(nn.Module):
    """``normalize``, ``sample`` (every ``frame_stride``-th frame), ``stage1`` (stem), ``stage2``..``stage5``,
    ``conv5``, ``head``."""

    def __init__(
        self,
        num_classes: int,
        width: int = 16,
        blocks: Sequence[int] = (1, 1, 2, 1),
        expansion: float = 2.25,
        dropout: float = 0.0,
        frame_stride: int = 1,
    ) -> None:
        super().__init__()
        if len(blocks) != 4:
            raise ValueError(f"blocks needs one count per residual stage (4), got {tuple(blocks)}")
        channels = [width, width, 2 * width, 4 * width, 8 * width]
        self.normalize = Normalize(channels_last=True)
        self.sample = TemporalSubsample(frame_stride)
        self.stage1 = X3DStem(width)
        for index, count in enumerate(blocks):
            out_channels = channels[index + 1]
            inner = round(out_channels * expansion)
            stage = nn.Sequential(
                *(
                    X3DBlock(
                        channels[index] if b == 0 else out_channels,
                        inner,
                        out_channels,
                        stride=2 if b == 0 else 1,
                        use_se=b % 2 == 0,
                    )
                    for b in range(count)
                )
            )
            self.add_module(f"stage{index + 2}", stage)
        head_channels = round(channels[-1] * expansion)
        self.conv5 = conv_bn(channels[-1], head_channels, (1, 1, 1))
        self.head = ClassifierHead(head_channels, num_classes, dropout)
        self.stages = [Stage(f"stage{k + 1}", c, "stage") for k, c in enumerate(channels)]
        init_weights(self)
        zero_init_residuals(self)

    def forward(self, clips: Tensor) -> Tensor:
        x = self.sample(self.normalize(clips))
        for k in range(1, 6):
            x = getattr(self, f"stage{k}")(x)
        return self.head(self.conv5(x))


def x3d(
    num_classes: int,
    width: int = 16,
    blocks: Sequence[int] = (1, 1, 2, 1),
    expansion: float = 2.25,
    dropout: float = 0.0,
    frame_stride: int = 1,
) -> X3D:
    """X3D with stage widths ``width`` x (1, 1, 2, 4, 8) and ``blocks`` per residual stage, on every
    ``frame_stride``-th frame (X3D's smaller models sample frames sparsely)."""
    return X3D(num_classes, width, blocks, expansion, dropout, frame_stride)
