"""A small SlowFast network: a slow and a fast pathway with lateral fusion fast -> slow.

The slow pathway is SlowOnly (every ``alpha``-th frame, temporal kernels in stage4 and stage5),
the fast pathway FastOnly (every frame, temporal kernels throughout, ``beta`` of the channels).
After stage1..stage4 a time-strided convolution (kernel 5x1x1, stride ``alpha``) maps the fast
features to the slow frame rate with twice the fast channels, and they are concatenated to the
slow features. ``slow.stageK`` and ``fast.stageK`` are the branch outputs *before* that fusion,
which is what the paper measures as SF-Slow and SF-Fast.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from stdyn.models.action.cnn3d import (
    FAST_TEMPORAL_KERNELS,
    MIN_FAST_CHANNELS,
    SLOW_TEMPORAL_KERNELS,
    ResNetSpec,
    Stem,
    conv_bn,
    residual_stage,
    zero_init_residuals,
)
from stdyn.models.layers import ClassifierHead, Normalize, Stage, TemporalSubsample, check_clips, init_weights

FUSION_KERNEL = 5
FUSION_CHANNEL_RATIO = 2


class Pathway(nn.Module):
    """One branch of SlowFast: ``stage1``..``stage5`` (run by the parent, which fuses in between)."""

    def __init__(
        self, spec: ResNetSpec, temporal_kernels: Sequence[int], extra_in_channels: Sequence[int]
    ) -> None:
        super().__init__()
        self.stage1 = Stem(spec.stem, temporal_kernels[0])
        in_channels = spec.stem
        for index in range(4):
            in_channels += extra_in_channels[index]
            stage = residual_stage(spec, index, in_channels, temporal_kernels[index + 1], inflate=False)
            self.add_module(f"stage{index + 2}", stage)
            in_channels = spec.out[index]

    def stage(self, k: int) -> nn.Module:
        return getattr(self, f"stage{k}")


class LateralFusion(nn.Module):
    """Concatenate the slow features with a time-strided convolution of the fast ones."""

    def __init__(self, fast_channels: int, alpha: int) -> None:
        super().__init__()
        self.lateral = conv_bn(
            fast_channels,
            fast_channels * FUSION_CHANNEL_RATIO,
            (FUSION_KERNEL, 1, 1),
            stride=(alpha, 1, 1),
        )

    def forward(self, slow: Tensor, fast: Tensor) -> Tensor:
        return torch.cat([slow, self.lateral(fast)], dim=1)


class SlowFast(nn.Module):
    """``normalize``, pathways ``slow`` and ``fast``, ``fusions`` after stage1..4, ``head`` on both."""

    def __init__(
        self,
        num_classes: int,
        width: int = 16,
        depth: int = 10,
        alpha: int = 4,
        beta: float = 1 / 8,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        slow_spec = ResNetSpec.make(width, depth)
        fast_spec = ResNetSpec.make(width, depth, scale=beta, min_channels=MIN_FAST_CHANNELS)
        lateral_channels = [c * FUSION_CHANNEL_RATIO for c in fast_spec.channels[:4]]
        self.alpha = alpha
        self.normalize = Normalize(channels_last=True)
        self.sample_slow = TemporalSubsample(alpha)
        self.slow = Pathway(slow_spec, SLOW_TEMPORAL_KERNELS, lateral_channels)
        self.fast = Pathway(fast_spec, FAST_TEMPORAL_KERNELS, [0, 0, 0, 0])
        self.fusions = nn.ModuleList(LateralFusion(c, alpha) for c in fast_spec.channels[:4])
        self.head = ClassifierHead(slow_spec.out[-1] + fast_spec.out[-1], num_classes, dropout)
        self.stages = [
            Stage(f"{name}.stage{k + 1}", c, name)
            for k in range(5)
            for name, c in (("slow", slow_spec.channels[k]), ("fast", fast_spec.channels[k]))
        ]
        init_weights(self)
        zero_init_residuals(self)

    def pack_input(self, clips: Tensor) -> list[Tensor]:
        """``[slow, fast]`` from a (B, 3, T, H, W) batch: every ``alpha``-th frame, and all frames."""
        check_clips(clips, check_range=False)
        return [self.sample_slow(clips), clips]

    def forward(self, pathways: Sequence[Tensor] | Tensor) -> Tensor:
        if isinstance(pathways, Tensor):
            pathways = self.pack_input(pathways)
        if len(pathways) != 2:
            raise ValueError(
                "SlowFast takes [slow, fast] clips, each (B, 3, T, H, W) in [0, 1]; "
                "build them with model.pack_input(clips)"
            )
        slow = self.normalize(pathways[0])
        fast = self.normalize(pathways[1])
        expected = -(-fast.shape[2] // self.alpha)
        if slow.shape[2] != expected:
            raise ValueError(
                f"the slow pathway has {slow.shape[2]} frames, expected {expected} "
                f"(every {self.alpha}-th of the fast pathway's {fast.shape[2]}); use model.pack_input(clips)"
            )
        for k in range(1, 6):
            slow = self.slow.stage(k)(slow)
            fast = self.fast.stage(k)(fast)
            if k < 5:
                slow = self.fusions[k - 1](slow, fast)
        return self.head([slow, fast])


def slowfast(
    num_classes: int,
    width: int = 16,
    depth: int = 10,
    alpha: int = 4,
    beta: float = 1 / 8,
    dropout: float = 0.0,
) -> SlowFast:
    """SlowFast with a slow pathway of ``width``/``depth`` and a fast one at ``beta`` x the channels."""
    return SlowFast(num_classes, width, depth, alpha, beta, dropout)
