"""Small 3D ResNets: C2D, I3D, SlowOnly and FastOnly (the pathways of SlowFast run alone).

They share one skeleton, after the SlowFast code base: a stem (stage1: conv, BN, ReLU, max pool,
4x spatial downsampling) and four residual stages (stage2..stage5, 2x spatial downsampling from
stage3 on), then global average pooling and a linear classifier. Only I3D downsamples time (2x, in
the stem).
What tells them apart is where the temporal kernels sit and how many frames they see:

- C2D: no temporal kernel anywhere (2D convolutions applied to every frame); time is pooled only
  by the head.
- I3D: every 3x3 kernel inflated to 3x3x3 (5x3x3 in the stem, with time stride 2 as in I3D's
  first layer; it halves the cost and lets the 3-frame kernels span twice the motion).
- SlowOnly: temporal kernels only in stage4 and stage5, on every ``frame_stride``-th frame.
- FastOnly: temporal kernels everywhere (5 in the stem, 3 after), every frame, lightweight
  channels (``beta`` of the widths above, at least 8 per stage).

Basic blocks put the temporal kernel on their first 3x3 convolution (both with ``inflate``);
bottleneck blocks (depth 50, 101) on their first 1x1, as in the SlowFast code base.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from stdyn.models.layers import ClassifierHead, DepthwiseConv3d, Normalize, Stage, TemporalSubsample, init_weights

MIN_FAST_CHANNELS = 8


def conv_bn(
    in_channels: int,
    out_channels: int,
    kernel: tuple[int, int, int],
    stride: tuple[int, int, int] = (1, 1, 1),
    groups: int = 1,
    activation: type[nn.Module] | None = nn.ReLU,
) -> nn.Sequential:
    """Conv3d ('same' padding, no bias; a :class:`DepthwiseConv3d` when depthwise), BatchNorm3d and an
    optional activation."""
    conv: nn.Conv3d
    if groups > 1 and groups == in_channels == out_channels:
        conv = DepthwiseConv3d(out_channels, kernel, stride)
    else:
        conv = nn.Conv3d(
            in_channels, out_channels, kernel, stride=stride, padding=tuple(k // 2 for k in kernel), groups=groups,
            bias=False,
        )
    layers: list[nn.Module] = [conv, nn.BatchNorm3d(out_channels)]
    if activation is not None:
        layers.append(activation())
    return nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    """``relu(shortcut(x) + branch(x))``; ``last_bn`` is zero-initialised so a new block starts as identity."""

    branch: nn.Sequential
    shortcut: nn.Module

    def __init__(self) -> None:
        super().__init__()
        self.relu = nn.ReLU()

    @property
    def last_bn(self) -> nn.BatchNorm3d:
        return self.branch[-1][1]

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.shortcut(x) + self.branch(x))


def shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """Identity, or a strided 1x1x1 projection where the shape changes."""
    if in_channels == out_channels and stride == 1:
        return nn.Identity()
    return conv_bn(in_channels, out_channels, (1, 1, 1), (1, stride, stride), activation=None)


class BasicBlock(ResidualBlock):
    """Two 3x3 convolutions; the first (or, with ``inflate``, both) with a temporal kernel."""

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        inner_channels: int,
        out_channels: int,
        stride: int,
        temporal_kernel: int,
        inflate: bool = False,
    ) -> None:
        super().__init__()
        second_kernel = temporal_kernel if inflate else 1
        self.branch = nn.Sequential(
            conv_bn(in_channels, inner_channels, (temporal_kernel, 3, 3), (1, stride, stride)),
            conv_bn(inner_channels, out_channels, (second_kernel, 3, 3), activation=None),
        )
        self.shortcut = shortcut(in_channels, out_channels, stride)


class Bottleneck(ResidualBlock):
    """1x1 (with the temporal kernel), 3x3, 1x1 expanding to ``out_channels``."""

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        inner_channels: int,
        out_channels: int,
        stride: int,
        temporal_kernel: int,
        inflate: bool = False,
    ) -> None:
        super().__init__()
        self.branch = nn.Sequential(
            conv_bn(in_channels, inner_channels, (temporal_kernel, 1, 1)),
            conv_bn(inner_channels, inner_channels, (1, 3, 3), (1, stride, stride)),
            conv_bn(inner_channels, out_channels, (1, 1, 1), activation=None),
        )
        self.shortcut = shortcut(in_channels, out_channels, stride)


DEPTHS: dict[int, tuple[type[ResidualBlock], tuple[int, int, int, int]]] = {
    10: (BasicBlock, (1, 1, 1, 1)),
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}


@dataclass(frozen=True)
class ResNetSpec:
    """Channels and blocks of one pathway: a stem and four residual stages."""

    stem: int
    inner: tuple[int, ...]
    out: tuple[int, ...]
    block: type[ResidualBlock]
    blocks: tuple[int, ...]

    @classmethod
    def make(cls, width: int, depth: int, scale: float = 1.0, min_channels: int = 1) -> ResNetSpec:
        """Stem ``width``; stage k (2..5) has ``width * 2**(k-2)`` inner channels (times the block's expansion out)."""
        if depth not in DEPTHS:
            raise ValueError(f"depth must be one of {sorted(DEPTHS)}, got {depth}")
        if width < 1:
            raise ValueError(f"width must be a positive number of channels, got {width}")
        block, blocks = DEPTHS[depth]

        def scaled(channels: int) -> int:
            return max(min_channels, round(channels * scale))

        inner = tuple(scaled(width * 2**k) for k in range(4))
        out = tuple(scaled(width * 2**k * block.expansion) for k in range(4))
        return cls(scaled(width), inner, out, block, blocks)

    @property
    def channels(self) -> tuple[int, ...]:
        """Output channels of stage1..stage5."""
        return (self.stem, *self.out)


class Stem(nn.Sequential):
    """stage1: conv (temporal_kernel x 3 x 3, spatial stride 2, time stride ``temporal_stride``), BN,
    ReLU, 3x3 max pool (stride 2)."""

    def __init__(
        self, out_channels: int, temporal_kernel: int, in_channels: int = 3, temporal_stride: int = 1
    ) -> None:
        super().__init__(
            conv_bn(in_channels, out_channels, (temporal_kernel, 3, 3), (temporal_stride, 2, 2)),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        )


def residual_stage(
    spec: ResNetSpec, index: int, in_channels: int, temporal_kernel: int, inflate: bool
) -> nn.Sequential:
    """Residual stage ``index`` (0..3 for stage2..stage5); all but the first halve the resolution."""
    blocks = []
    for b in range(spec.blocks[index]):
        stride = 2 if (b == 0 and index > 0) else 1
        blocks.append(
            spec.block(
                in_channels if b == 0 else spec.out[index],
                spec.inner[index],
                spec.out[index],
                stride,
                temporal_kernel,
                inflate,
            )
        )
    return nn.Sequential(*blocks)


def zero_init_residuals(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, ResidualBlock):
            nn.init.zeros_(module.last_bn.weight)


class ResNet3D(nn.Module):
    """A single-pathway 3D ResNet: ``normalize``, ``sample``, ``stage1``..``stage5``, ``head``."""

    def __init__(
        self,
        num_classes: int,
        spec: ResNetSpec,
        temporal_kernels: Sequence[int],
        inflate: bool = False,
        frame_stride: int = 1,
        dropout: float = 0.0,
        stem_temporal_stride: int = 1,
    ) -> None:
        super().__init__()
        if len(temporal_kernels) != 5:
            raise ValueError("temporal_kernels needs one kernel size per stage (5)")
        self.normalize = Normalize(channels_last=True)
        self.sample = TemporalSubsample(frame_stride)
        self.stage1 = Stem(spec.stem, temporal_kernels[0], temporal_stride=stem_temporal_stride)
        in_channels = spec.stem
        for index in range(4):
            stage = residual_stage(spec, index, in_channels, temporal_kernels[index + 1], inflate)
            self.add_module(f"stage{index + 2}", stage)
            in_channels = spec.out[index]
        self.head = ClassifierHead(in_channels, num_classes, dropout)
        self.stages = [Stage(f"stage{k + 1}", c, "stage") for k, c in enumerate(spec.channels)]
        init_weights(self)
        zero_init_residuals(self)

    def forward(self, clips: Tensor) -> Tensor:
        x = self.sample(self.normalize(clips))
        for k in range(1, 6):
            x = getattr(self, f"stage{k}")(x)
        return self.head(x)


def c2d(num_classes: int, width: int = 16, depth: int = 10, dropout: float = 0.0, frame_stride: int = 1) -> ResNet3D:
    """C2D: a 2D ResNet applied to every ``frame_stride``-th frame; time is only averaged by the head."""
    return ResNet3D(num_classes, ResNetSpec.make(width, depth), (1, 1, 1, 1, 1), frame_stride=frame_stride,
                    dropout=dropout)


def i3d(
    num_classes: int, width: int = 16, depth: int = 10, dropout: float = 0.0, temporal_stride: int = 2
) -> ResNet3D:
    """I3D: every kernel inflated in time (5x3x3 stem, 3x3x3 blocks); the stem strides time by
    ``temporal_stride``, as I3D's first (7x7x7, stride 2) convolution does."""
    spec = ResNetSpec.make(width, depth)
    return ResNet3D(
        num_classes, spec, (5, 3, 3, 3, 3), inflate=True, dropout=dropout, stem_temporal_stride=temporal_stride
    )


SLOW_TEMPORAL_KERNELS = (1, 1, 1, 3, 3)
FAST_TEMPORAL_KERNELS = (5, 3, 3, 3, 3)


def slowonly(
    num_classes: int, width: int = 16, depth: int = 10, frame_stride: int = 4, dropout: float = 0.0
) -> ResNet3D:
    """SlowOnly: temporal kernels in stage4 and stage5 only, on every ``frame_stride``-th frame.

    ``depth=18`` and ``depth=50`` (bottlenecks) give the two depths of the StaticDropout study.
    """
    spec = ResNetSpec.make(width, depth)
    return ResNet3D(num_classes, spec, SLOW_TEMPORAL_KERNELS, frame_stride=frame_stride, dropout=dropout)


def fastonly(
    num_classes: int, width: int = 16, depth: int = 10, beta: float = 1 / 8, dropout: float = 0.0
) -> ResNet3D:
    """FastOnly: temporal kernels throughout, every frame, ``beta`` x the channels of a ``width`` network."""
    spec = ResNetSpec.make(width, depth, scale=beta, min_channels=MIN_FAST_CHANNELS)
    return ResNet3D(num_classes, spec, FAST_TEMPORAL_KERNELS, dropout=dropout)
