"""torchvision's video models behind the same contract: [0, 1] clips in, stages described.

The torchvision model sits unchanged under ``net`` (so ``net.*`` keys, or torchvision's own keys,
load into it); a fixed normalisation layer with the mean/std of its published weights comes first.
Transformer blocks whose output is not a (B, N, C) / (B, C, T, H, W) tensor get a parameter-free
``out`` module that their output passes through: MViT blocks return ``(tokens, thw)`` and expose
``blocks.i.out`` with the tokens (class token first); Swin blocks are channels-last and expose
``features.i.j.out`` as (B, C, T, H, W). What a hook on ``out`` changes flows on into the network.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torchvision.models.video as tv
from torch import Tensor, nn
from torchvision.models.video.s3d import SepInceptionBlock3D

from stdyn.models.layers import Normalize, Stage, check_clips, output_channels

_TORCHVISION_MEAN = (0.43216, 0.394666, 0.37645)
_TORCHVISION_STD = (0.22803, 0.22145, 0.216989)
_SWIN_MEAN = (0.485, 0.456, 0.406)
_SWIN_STD = (0.229, 0.224, 0.225)
_MVIT_MEAN = (0.45, 0.45, 0.45)
_MVIT_STD = (0.225, 0.225, 0.225)

# name -> (builder, mean, std, the (T, H, W) the model requires or None)
BUILDERS: dict[str, tuple[Callable[..., nn.Module], tuple, tuple, tuple[int, int, int] | None]] = {
    "r3d_18": (tv.r3d_18, _TORCHVISION_MEAN, _TORCHVISION_STD, None),
    "mc3_18": (tv.mc3_18, _TORCHVISION_MEAN, _TORCHVISION_STD, None),
    "r2plus1d_18": (tv.r2plus1d_18, _TORCHVISION_MEAN, _TORCHVISION_STD, None),
    "s3d": (tv.s3d, _TORCHVISION_MEAN, _TORCHVISION_STD, None),
    # torchvision builds MViT's position grid for 16 x 224 x 224 clips only
    "mvit_v1_b": (tv.mvit_v1_b, _MVIT_MEAN, _MVIT_STD, (16, 224, 224)),
    "mvit_v2_s": (tv.mvit_v2_s, _MVIT_MEAN, _MVIT_STD, (16, 224, 224)),
    "swin3d_t": (tv.swin3d_t, _SWIN_MEAN, _SWIN_STD, None),
}
NAMES = tuple(BUILDERS)
_CONVOLUTIONAL = ("r3d_18", "mc3_18", "r2plus1d_18", "s3d")


def _s3d_channels(block: nn.Module) -> int | None:
    if isinstance(block, SepInceptionBlock3D):  # four branches, concatenated
        return sum(output_channels(getattr(block, f"branch{i}")) or 0 for i in range(4))
    return output_channels(block)


def _tap_tokens(block: nn.Module, args: Any, output: tuple[Tensor, Any]) -> tuple[Tensor, Any]:
    tokens, thw = output
    return block.out(tokens), thw


def _tap_channels_last(block: nn.Module, args: Any, output: Tensor) -> Tensor:
    return block.out(output.movedim(-1, 1)).movedim(1, -1)


def _add_tap(block: nn.Module, hook: Callable[..., Any]) -> None:
    block.add_module("out", nn.Identity())
    block.register_forward_hook(hook)


def _stages(name: str, net: nn.Module) -> list[Stage]:
    """The measurable stages of a torchvision video model (adds ``out`` taps where needed)."""
    if name in ("r3d_18", "mc3_18", "r2plus1d_18"):
        parts = ["stem", "layer1", "layer2", "layer3", "layer4"]
        return [Stage(f"net.{p}", output_channels(getattr(net, p)), "stage") for p in parts]
    if name == "s3d":
        return [
            Stage(f"net.features.{i}", _s3d_channels(block), "block")
            for i, block in enumerate(net.features)
            if not isinstance(block, nn.MaxPool3d)
        ]
    if name.startswith("mvit"):
        stages = []
        for i, block in enumerate(net.blocks):
            channels = output_channels(block)
            _add_tap(block, _tap_tokens)
            stages.append(Stage(f"net.blocks.{i}.out", channels, "block"))
        return stages
    if name == "swin3d_t":
        stages = []
        for i, layer in enumerate(net.features):
            if isinstance(layer, nn.Sequential):
                for j, block in enumerate(layer):
                    channels = output_channels(block)
                    _add_tap(block, _tap_channels_last)
                    stages.append(Stage(f"net.features.{i}.{j}.out", channels, "block"))
        return stages
    raise KeyError(name)


class TorchvisionVideoModel(nn.Module):
    """``normalize`` then the torchvision model ``net``."""

    def __init__(
        self,
        name: str,
        net: nn.Module,
        mean: tuple,
        std: tuple,
        input_size: tuple[int, int, int] | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        # channels-last helps the convolutional models; the transformers reshape to tokens at once
        self.normalize = Normalize(mean, std, channels_last=name in _CONVOLUTIONAL)
        self.net = net
        self.input_size = input_size
        self.stages = _stages(name, net)

    def forward(self, clips: Tensor) -> Tensor:
        check_clips(clips, check_range=False)
        if self.input_size is not None and tuple(clips.shape[2:]) != self.input_size:
            t, h, w = self.input_size
            raise ValueError(
                f"{self.name} takes clips (B, 3, {t}, {h}, {w}) in [0, 1], got {tuple(clips.shape)}; "
                "resize the clips or use the registry's small 'mvit'"
            )
        return self.net(self.normalize(clips))


def build(name: str, num_classes: int, **kwargs: Any) -> TorchvisionVideoModel:
    """torchvision model ``name`` with random weights (keyword arguments go to its builder)."""
    builder, mean, std, input_size = BUILDERS[name]
    net = builder(weights=None, num_classes=num_classes, **kwargs)
    return TorchvisionVideoModel(name, net, mean, std, input_size)
