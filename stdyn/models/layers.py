"""Pieces every model shares: stage descriptions, input checks, normalisation, the classifier head."""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

KINETICS_MEAN = (0.45, 0.45, 0.45)
KINETICS_STD = (0.225, 0.225, 0.225)

# Values a little outside [0, 1] come from resampling and rounding; anything further is a
# sign that the clip was already normalised or is in 0..255.
_RANGE_TOLERANCE = 0.05


@dataclass(frozen=True)
class Stage:
    """A measurable point of a model: the output of module ``name`` (a path in ``named_modules()``).

    The output is (B, C, T, H, W), (B, C, H, W) or tokens (B, N, C), with ``channels`` = C.
    ``kind`` groups stages for plots: "stage", "slow", "fast", "block", and the two-stream models'
    "appearance", "motion", "fusion". ``number`` is the stage's number in its group when that is not
    its position (a model fusing at stages 2 and 5 only).
    """

    name: str
    channels: int
    kind: str = "stage"
    number: int | None = None


def check_clips(clips: Tensor, what: str = "clips", check_range: bool = True) -> None:
    """Raise a ValueError unless ``clips`` is a float batch (B, 3, T, H, W) with values in [0, 1]."""
    hint = ""
    if isinstance(clips, Tensor) and clips.ndim == 4:
        hint = " (a single clip (3, T, H, W)? add a batch dimension with clips.unsqueeze(0))"
    elif isinstance(clips, Tensor) and clips.ndim == 5 and clips.shape[2] == 3:
        hint = " (frames first? use clips.transpose(1, 2) to go from (B, T, 3, H, W) to (B, 3, T, H, W))"
    _check_batch(clips, what, "clips", "(B, 3, T, H, W)", 5, hint, check_range)


def check_frames(frames: Tensor, what: str = "frames", check_range: bool = True) -> None:
    """Raise a ValueError unless ``frames`` is a float batch (B, 3, H, W) with values in [0, 1]."""
    hint = ""
    if isinstance(frames, Tensor) and frames.ndim == 3:
        hint = " (a single frame (3, H, W)? add a batch dimension with frames.unsqueeze(0))"
    _check_batch(frames, what, "frames", "(B, 3, H, W)", 4, hint, check_range)


def _check_batch(x: Tensor, what: str, items: str, shape: str, ndim: int, hint: str, check_range: bool) -> None:
    layout = f"a float batch of {items} shaped {shape} with values in [0, 1]"
    if not isinstance(x, Tensor):
        raise TypeError(f"{what}: expected {layout}, got {type(x).__name__}")
    if x.ndim != ndim or x.shape[1] != 3:
        raise ValueError(f"{what}: expected {layout}, got shape {tuple(x.shape)}{hint}")
    if not x.is_floating_point():
        raise ValueError(f"{what}: expected {layout}, got dtype {x.dtype} (convert with {items}.float() / 255)")
    if check_range and x.numel():
        low, high = torch.aminmax(x.detach())
        if low < -_RANGE_TOLERANCE or high > 1 + _RANGE_TOLERANCE:
            raise ValueError(
                f"{what}: expected {layout}, got values in [{low.item():.3g}, {high.item():.3g}]; "
                f"models normalise inside, so pass un-normalised {items} scaled to [0, 1]"
            )


class Normalize(nn.Module):
    """The fixed first layer: checks the layout of a [0, 1] batch of clips (B, 3, T, H, W), or of
    frames (B, 3, H, W) with ``frames=True``, and normalises it per colour channel.

    Mean and std are non-persistent buffers, so they never appear in a state dict. With
    ``channels_last`` the output is in ``torch.channels_last_3d`` memory format, which the
    convolutions that follow keep (2-3x faster 3D and depthwise convolutions on CPU). ``what``
    names the input in error messages.
    """

    def __init__(
        self,
        mean: Sequence[float] = KINETICS_MEAN,
        std: Sequence[float] = KINETICS_STD,
        check_range: bool = True,
        channels_last: bool = False,
        frames: bool = False,
        what: str | None = None,
    ) -> None:
        super().__init__()
        if frames and channels_last:
            raise ValueError("channels_last is the 3D memory format of clips; frames do not take it")
        shape = (1, 3, 1, 1) if frames else (1, 3, 1, 1, 1)
        self.register_buffer("mean", torch.tensor(mean).view(shape), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(shape), persistent=False)
        self.check_range = check_range
        self.channels_last = channels_last
        self.frames = frames
        self.what = what or ("frames" if frames else "clips")

    def forward(self, x: Tensor) -> Tensor:
        (check_frames if self.frames else check_clips)(x, self.what, check_range=self.check_range)
        normalized = (x - self.mean) / self.std
        if self.channels_last:
            normalized = normalized.contiguous(memory_format=torch.channels_last_3d)
        return normalized

    def extra_repr(self) -> str:
        text = f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"
        return text + (", channels_last=True" if self.channels_last else "") + (", frames=True" if self.frames else "")


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


class _DepthwiseConv3dCPU(torch.autograd.Function):
    """A depthwise 3D convolution whose input gradient is computed as a forward convolution.

    On the CPU, oneDNN's backward pass of depthwise 3D convolutions is 5-50x slower than its
    forward pass; the input gradient is the correlation of the (zero-upsampled, when strided)
    output gradient with the flipped kernel, which runs on the fast forward path, and the weight
    gradient is summed tap by tap.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, stride: tuple[int, ...], padding: tuple[int, ...]) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        return F.conv3d(x, weight, stride=stride, padding=padding, groups=weight.shape[0])

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        x, weight = ctx.saved_tensors
        channels, kernel = weight.shape[0], weight.shape[2:]
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            spread = grad
            if any(step > 1 for step in ctx.stride):
                full = [size + 2 * pad - k + 1 for size, pad, k in zip(x.shape[2:], ctx.padding, kernel)]
                spread = _spread(grad, ctx.stride, full)
            back_padding = [k - 1 - p for k, p in zip(kernel, ctx.padding)]
            grad_x = F.conv3d(spread, weight.flip(2, 3, 4), padding=back_padding, groups=channels)
        if ctx.needs_input_grad[1]:
            grad_weight = _depthwise_weight_grad(grad, x, kernel, ctx.stride, ctx.padding)
        return grad_x, grad_weight, None, None


def _depthwise_weight_grad(grad: Tensor, x: Tensor, kernel: Sequence[int], stride: Sequence[int],
                           padding: Sequence[int]) -> Tensor:
    """The weight gradient of a depthwise 3D convolution, one kernel tap at a time: the sum over
    batch and positions of the output gradient times the input that tap saw (2-3x faster than
    oneDNN's on the CPU)."""
    padded = F.pad(x, [pad for pad in reversed(padding) for _ in (0, 1)])
    steps = grad.shape[2:]
    taps = grad.new_empty(x.shape[1], *kernel)
    for offset in itertools.product(*(range(k) for k in kernel)):
        window = tuple(slice(o, o + s * (n - 1) + 1, s) for o, s, n in zip(offset, stride, steps))
        taps[(slice(None), *offset)] = (padded[(slice(None), slice(None), *window)] * grad).sum((0, 2, 3, 4))
    return taps.unsqueeze(1)


def _spread(grad: Tensor, stride: Sequence[int], full: Sequence[int]) -> Tensor:
    """A strided convolution's output gradient on the stride-1 output grid of size ``full``
    (zero where no strided output was taken), in channels-last memory."""
    batch, channels, *sizes = grad.shape
    interleaved = grad.new_zeros(batch, sizes[0], stride[0], sizes[1], stride[1], sizes[2], stride[2], channels)
    interleaved[:, :, 0, :, 0, :, 0] = grad.permute(0, 2, 3, 4, 1)
    spread = interleaved.view(batch, *(n * step for n, step in zip(sizes, stride)), channels)
    return spread[:, : full[0], : full[1], : full[2]].permute(0, 4, 1, 2, 3)


class DepthwiseConv3d(nn.Conv3d):
    """``nn.Conv3d(channels, channels, kernel, groups=channels)`` (odd kernels, 'same' padding, no bias)
    with a faster backward pass on the CPU; on other devices it is the plain convolution."""

    def __init__(self, channels: int, kernel: Sequence[int], stride: Sequence[int] = (1, 1, 1)) -> None:
        if any(k % 2 == 0 for k in kernel):
            raise ValueError(f"DepthwiseConv3d takes odd kernel sizes, got {tuple(kernel)}")
        super().__init__(
            channels, channels, tuple(kernel), stride=tuple(stride), padding=tuple(k // 2 for k in kernel),
            groups=channels, bias=False,
        )

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type != "cpu" or not torch.is_grad_enabled():
            return super().forward(x)
        return _DepthwiseConv3dCPU.apply(x, self.weight, self.stride, self.padding)


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


class Transient(dict):
    """Per-pass tensors kept on a model (still attached to the autograd graph): neither copied nor
    pickled, so ``copy.deepcopy(model)`` and ``torch.save(model)`` work after a forward pass."""

    def __deepcopy__(self, memo: dict) -> Transient:
        return Transient()

    def __reduce__(self) -> tuple:
        return (Transient, ())
