"""Video instance segmentation (VIS): a small, CPU-trainable stand-in for VisTR (Wang et al., 2021).

::

    model = vistr(num_classes=4)                     # or stdyn.models.create("vistr_r50", 4)
    outputs = model(clips)                           # clips (B, 3, T, H, W) in [0, 1]
    class_logits, mask_logits = unpack_outputs(outputs, T, H, W)
    # class_logits (B, Q, K + 1), the last class "no object"; mask_logits (B, Q, T, H, W)

VisTR sees a clip as one sequence: a CNN backbone turns every frame into a grid of features, a
transformer encoder attends over the tokens of all frames at once, and a transformer decoder
turns *instance-sequence queries* (``queries`` instances x T frames, each query an instance
embedding plus a frame embedding) into one token per instance and frame. Each instance gets one
class for the whole clip and a mask in every frame. Ours, at a scale that trains on a CPU:

- ``normalize``: ImageNet mean and std per colour channel (the backbone stands in for an
  ImageNet-initialised ResNet), after checking that the clips are (B, 3, T, H, W) in [0, 1];
- ``backbone``: a 2D CNN on every frame: ``stem`` (3x3 convolution, stride 2) and residual
  stages ``layer1`` .. ``layer4`` of widths ``(w, 2w, 4w, 8w)`` with strides ``(1, 2, 2, 1)``, so
  the last feature map has stride 8 (4 x 4 tokens per frame of a 32 x 32 clip). ``backbone="r50"``
  has ``blocks=(1, 1, 1, 1)`` residual blocks per stage, ``"r101"`` twice as many,
  ``(2, 2, 2, 2)``: the same widths, a deeper network, as ResNet-101 is to ResNet-50;
- ``input_proj``: a 1x1 convolution to ``dim``; the tokens (B, T*h*w, dim), t-major, get a
  fixed sine position encoding over time, rows and columns (:func:`position_encoding`; computed
  for the clip's own T, h, w, so any clip size works);
- ``encoder1`` .. ``encoder{E}``: transformer encoder layers (``nn.TransformerEncoderLayer``,
  post-norm as in DETR and VisTR, ReLU, feed-forward width ``4 * dim``, no dropout);
- ``decoder1`` .. ``decoder{D}``: transformer decoder layers over the ``queries * T`` query
  tokens, q-major (instance q's T frames are tokens ``q*T .. q*T + T - 1``); query (q, t) starts
  as ``instance_embed[q]`` (learned) plus the sine frame encoding of frame t (fixed, so clips of
  any length work);
- ``class_head``: a linear layer to ``num_classes + 1`` logits per query token, averaged over an
  instance's T frames: one class per instance and clip;
- the mask head: a small FPN turns the encoder memory into per-pixel embeddings at half the
  input resolution: upsampled to stride 4 and added to ``layer2``'s features (through a 1x1
  convolution in ``laterals``, then a 3x3 convolution), upsampled again to stride 2 and added to
  ``layer1``'s (a 1x1 convolution, a ReLU), then ``pixel_embed`` (1x1). The mask logit of
  instance q at a pixel of frame t is the dot product of ``mask_embed(query token (q, t))`` (a
  2-layer MLP) with that pixel's embedding, divided by sqrt(dim); ``refine`` adds a residual of
  two small 3D convolutions over (T, h, w) (:class:`FrameConv3d`, ``refine_channels`` hidden
  channels) to every instance's mask sequence, as VisTR refines each instance's masks with 3D
  convolutions; then the masks are upsampled (bilinear) to H x W. At stride 4 (VisTR's and
  DETR's mask heads work at a quarter of the input resolution) the objects of a 32-pixel clip
  span two or three cells.

The model returns one tensor (the project's training loop and probe expect a tensor):
:func:`pack_outputs` puts the class logits and the flattened mask logits side by side,
(B, Q, K + 1 + T*H*W); :func:`unpack_outputs` takes them apart again.

Measurable stages (``model.stages``): ``encoder{k}`` (kind "encoder"), tokens (B, T*h*w, dim),
and ``decoder{k}`` (kind "decoder"), tokens (B, queries*T, dim); the probe averages each over
its tokens.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stdyn.models.layers import Normalize, Stage, init_weights
from stdyn.models.vos import IMAGENET_MEAN, IMAGENET_STD, ResidualBlock2d, conv_bn, parameter_count

__all__ = [
    "BACKBONES",
    "VIS_MODELS",
    "FrameBackbone",
    "FrameConv3d",
    "VisTR",
    "frame_encoding",
    "pack_outputs",
    "parameter_count",
    "position_encoding",
    "sine_encoding",
    "unpack_outputs",
    "vistr",
    "vistr_r50",
    "vistr_r101",
]

BACKBONES: dict[str, tuple[int, ...]] = {"r50": (1, 1, 1, 1), "r101": (2, 2, 2, 2)}
"""Residual blocks per backbone stage, by backbone name (the stand-ins for ResNet-50 and -101)."""
STAGE_STRIDES = (1, 2, 2, 1)  # after the stride-2 stem: stride 2, 4, 8, 8
MASK_STAGES = (2, 1)  # the backbone stages whose features (stride 4, then 2) the mask head adds, coarse to fine


# ---------------------------------------------------------------------------------------------
# Packing the two outputs into one tensor


def pack_outputs(class_logits: Tensor, mask_logits: Tensor) -> Tensor:
    """One tensor (B, Q, K + 1 + T*H*W) from class logits (B, Q, K + 1) and mask logits
    (B, Q, T, H, W): per instance, its class logits followed by its flattened mask logits."""
    if class_logits.ndim != 3 or mask_logits.ndim != 5 or class_logits.shape[:2] != mask_logits.shape[:2]:
        raise ValueError(
            f"expected class logits (B, Q, K + 1) and mask logits (B, Q, T, H, W) with the same B and Q, "
            f"got {tuple(class_logits.shape)} and {tuple(mask_logits.shape)}"
        )
    return torch.cat([class_logits, mask_logits.flatten(2)], dim=2)


def unpack_outputs(outputs: Tensor, frames: int, height: int, width: int) -> tuple[Tensor, Tensor]:
    """``(class_logits (B, Q, K + 1), mask_logits (B, Q, T, H, W))`` from the packed outputs
    (B, Q, K + 1 + T*H*W) of a clip of ``frames`` x ``height`` x ``width``; views, not copies.

    The number of classes is what remains after the masks: at least 2 (one class and
    "no object")."""
    pixels = frames * height * width
    if not isinstance(outputs, Tensor) or outputs.ndim != 3 or outputs.shape[2] < pixels + 2:
        shape = tuple(outputs.shape) if isinstance(outputs, Tensor) else type(outputs).__name__
        raise ValueError(
            f"expected packed VIS outputs (B, Q, K + 1 + T*H*W) with T*H*W = {frames}*{height}*{width} "
            f"= {pixels} and K >= 1, i.e. a last dimension of at least {pixels + 2}, got {shape}; "
            "pass the frames, height and width of the clips the model saw"
        )
    classes = outputs.shape[2] - pixels
    return outputs[..., :classes], outputs[..., classes:].unflatten(2, (frames, height, width))


# ---------------------------------------------------------------------------------------------
# Position encodings


def sine_encoding(positions: Tensor, channels: int, temperature: float = 10000.0) -> Tensor:
    """(n,) positions -> (n, channels): sines then cosines of the positions at geometrically
    spaced frequencies ``temperature ** (-i / half)`` (an odd ``channels`` gets one more sine)."""
    sines, cosines = (channels + 1) // 2, channels // 2
    steps = torch.arange(max(sines, 1), dtype=torch.float32, device=positions.device)
    frequencies = temperature ** (-steps / max(sines, 1))
    angles = positions.float()[:, None] * frequencies[None, :]
    return torch.cat([angles[:, :sines].sin(), angles[:, :cosines].cos()], dim=1)


def _normalized_positions(n: int, device: torch.device) -> Tensor:
    """Positions 0..n-1 scaled to (0, 2 pi), as DETR's normalised sine encoding: the same range for
    any grid size."""
    return (torch.arange(n, dtype=torch.float32, device=device) + 0.5) / n * (2 * math.pi)


def position_encoding(frames: int, height: int, width: int, dim: int,
                      device: torch.device | str = "cpu") -> Tensor:
    """The fixed 3D position encoding (T*h*w, dim), t-major: ``dim - 2 * (dim // 3)`` channels
    encode the frame, ``dim // 3`` the row and ``dim // 3`` the column (:func:`sine_encoding` of
    positions normalised to (0, 2 pi), as VisTR's 3D extension of DETR's encoding)."""
    device = torch.device(device)
    spatial = dim // 3
    temporal = dim - 2 * spatial
    t = sine_encoding(_normalized_positions(frames, device), temporal)
    y = sine_encoding(_normalized_positions(height, device), spatial)
    x = sine_encoding(_normalized_positions(width, device), spatial)
    grid = torch.cat([
        t[:, None, None, :].expand(frames, height, width, temporal),
        y[None, :, None, :].expand(frames, height, width, spatial),
        x[None, None, :, :].expand(frames, height, width, spatial),
    ], dim=3)
    return grid.reshape(frames * height * width, dim)


def frame_encoding(frames: int, dim: int, device: torch.device | str = "cpu") -> Tensor:
    """The fixed frame embedding of the queries: (T, dim), :func:`sine_encoding` of the frame
    positions normalised to (0, 2 pi)."""
    return sine_encoding(_normalized_positions(frames, torch.device(device)), dim)


# ---------------------------------------------------------------------------------------------
# The model


class FrameConv3d(nn.Conv3d):
    """``nn.Conv3d(in, out, 3, padding=1)`` for clips with few frames and few channels, computed on
    the CPU as one 2D convolution over frames stacked as channels: the 3D kernel becomes a banded
    (T*out, T*in, 3, 3) kernel (output frame t reads input frames t-1, t, t+1), the same result
    (zero padding in time too) 2-3x faster than oneDNN's 3D convolution at these sizes. Clips of more
    than ``max_banded_frames`` frames, and other devices, use the plain 3D convolution."""

    max_banded_frames = 16

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, frames, height, width = x.shape
        if x.device.type != "cpu" or frames > self.max_banded_frames:
            return super().forward(x)
        # band[t, s, tap] = 1 where output frame t reads input frame s = t + tap - 1
        ones = self.weight.new_ones
        band = torch.stack([torch.diag(ones(frames - abs(d)), d) for d in (-1, 0, 1)], dim=2)
        kernel = torch.einsum("tsk,ockhw->toschw", band, self.weight)
        kernel = kernel.reshape(frames * self.out_channels, frames * channels, 3, 3)
        bias = self.bias.repeat(frames) if self.bias is not None else None
        stacked = x.transpose(1, 2).reshape(batch, frames * channels, height, width)
        y = F.conv2d(stacked, kernel, bias, padding=1)
        return y.view(batch, frames, self.out_channels, height, width).transpose(1, 2)


class FrameBackbone(nn.Module):
    """``stem`` (conv 3x3, stride 2, BN, ReLU) and ``layer1`` .. ``layer4``
    (:class:`~stdyn.models.vos.ResidualBlock2d`, widths ``(w, 2w, 4w, 8w)``, strides
    ``(1, 2, 2, 1)``, ``blocks[k]`` blocks each) on frames (N, 3, H, W); returns every stage's
    output: ``layer1`` (N, w, H/2, W/2), ``layer2`` (N, 2w, H/4, W/4), ``layer3`` and ``layer4``
    (N, 8w, H/8, W/8)."""

    def __init__(self, width: int, blocks: Sequence[int]) -> None:
        super().__init__()
        self.widths = tuple(width * 2**k for k in range(4))
        self.blocks = tuple(blocks)
        self.stem = conv_bn(3, width, 3, stride=2)
        channels = width
        for k, (out, stride, count) in enumerate(zip(self.widths, STAGE_STRIDES, self.blocks), start=1):
            layers = [ResidualBlock2d(channels, out, stride)]
            layers += [ResidualBlock2d(out, out) for _ in range(count - 1)]
            self.add_module(f"layer{k}", nn.Sequential(*layers))
            channels = out

    def forward(self, frames: Tensor) -> list[Tensor]:
        x = self.stem(frames)
        outputs = []
        for k in range(1, 5):
            x = getattr(self, f"layer{k}")(x)
            outputs.append(x)
        return outputs


class VisTR(nn.Module):
    """A VisTR-like video instance segmentation model; see the module docstring.

    ``forward(clips)`` takes (B, 3, T, H, W) in [0, 1] and returns the packed outputs
    (B, queries, num_classes + 1 + T*H*W) (:func:`unpack_outputs`); ``forward_parts(clips)``
    returns ``(class_logits, mask_logits)`` directly.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        backbone: str = "r50",
        width: int = 8,
        dim: int = 32,
        heads: int = 2,
        encoder_layers: int = 2,
        decoder_layers: int = 2,
        queries: int = 6,
        blocks: Sequence[int] | None = None,
        refine_channels: int = 4,
    ) -> None:
        super().__init__()
        for name, value in (("num_classes", num_classes), ("width", width), ("dim", dim), ("heads", heads),
                            ("encoder_layers", encoder_layers), ("decoder_layers", decoder_layers),
                            ("queries", queries), ("refine_channels", refine_channels)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(map(repr, BACKBONES))}")
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads} (each head gets dim // heads channels)")
        if blocks is None:
            blocks = BACKBONES[backbone]
        blocks = tuple(blocks)
        if len(blocks) != 4 or not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in blocks):
            raise ValueError(f"blocks must be 4 positive ints (residual blocks per backbone stage), got {blocks!r}")

        self.num_classes, self.num_queries, self.dim = num_classes, queries, dim
        self.config: dict[str, Any] = {
            "num_classes": num_classes, "backbone": backbone, "width": width, "dim": dim, "heads": heads,
            "encoder_layers": encoder_layers, "decoder_layers": decoder_layers, "queries": queries,
            "blocks": blocks, "refine_channels": refine_channels,
        }
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)
        self.backbone = FrameBackbone(width, blocks)
        widths = self.backbone.widths
        self.input_proj = nn.Conv2d(widths[-1], dim, 1)
        self.stages: list[Stage] = []
        for k in range(1, encoder_layers + 1):
            self.add_module(f"encoder{k}", nn.TransformerEncoderLayer(
                dim, heads, dim_feedforward=4 * dim, dropout=0.0, batch_first=True))
            self.stages.append(Stage(f"encoder{k}", dim, "encoder"))
        self.instance_embed = nn.Embedding(queries, dim)
        for k in range(1, decoder_layers + 1):
            self.add_module(f"decoder{k}", nn.TransformerDecoderLayer(
                dim, heads, dim_feedforward=4 * dim, dropout=0.0, batch_first=True))
            self.stages.append(Stage(f"decoder{k}", dim, "decoder"))
        self.class_head = nn.Linear(dim, num_classes + 1)
        self.pool_proj = nn.Linear(dim, dim)
        self.mask_embed = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))
        self.laterals = nn.ModuleList(nn.Conv2d(widths[k - 1], dim, 1) for k in MASK_STAGES)
        # a 3x3 convolution after the stride-4 sum; at stride 2 a ReLU only (a 3x3 there costs a
        # third of a training step)
        self.smooth = nn.ModuleList([conv_bn(dim, dim, 3), nn.ReLU()])
        self.pixel_embed = nn.Conv2d(dim, dim, 1)
        self.refine = nn.Sequential(FrameConv3d(1, refine_channels), nn.ReLU(), FrameConv3d(refine_channels, 1))
        self._encoders = encoder_layers
        self._decoders = decoder_layers
        self._init_weights()

    def _init_weights(self) -> None:
        init_weights(self)  # He convolutions, unit batch norms
        for module in self.modules():  # Xavier for the transformer and the heads, as DETR
            if isinstance(module, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)):
                for p in module.parameters():
                    if p.dim() > 1:
                        nn.init.xavier_uniform_(p)
        for module in (*self.mask_embed, self.class_head):
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
        for conv in (self.refine[0], self.refine[2]):  # the refinement starts small (near identity)
            nn.init.normal_(conv.weight, std=0.05)
            nn.init.zeros_(conv.bias)

    def forward_parts(self, clips: Tensor) -> tuple[Tensor, Tensor]:
        """``(class_logits (B, Q, K + 1), mask_logits (B, Q, T, H, W))`` for clips (B, 3, T, H, W)."""
        x = self.normalize(clips)
        batch, _, frames, height, width = x.shape
        # Not in channels-last memory: it is faster on the CPU, but torch 2.14's backward of these
        # small convolutions can abort with a double free (width 4 at 16 px).
        frame_batch = x.transpose(1, 2).reshape(batch * frames, 3, height, width)
        stages = self.backbone(frame_batch)
        features = self.input_proj(stages[-1])  # (B*T, dim, h, w)
        h, w = features.shape[-2:]
        tokens = features.permute(0, 2, 3, 1).reshape(batch, frames * h * w, self.dim)  # t-major
        memory = tokens + position_encoding(frames, h, w, self.dim, tokens.device).to(tokens.dtype)
        for k in range(1, self._encoders + 1):
            memory = getattr(self, f"encoder{k}")(memory)

        grid = memory.reshape(batch * frames, h, w, self.dim).permute(0, 3, 1, 2)  # (B*T, dim, h, w)
        for k, lateral, smooth in zip(MASK_STAGES, self.laterals, self.smooth):  # an FPN, coarse to fine
            feature = lateral(stages[k - 1])
            grid = smooth(feature + F.interpolate(grid, size=feature.shape[-2:], mode="bilinear", align_corners=False))
        pixels = self.pixel_embed(grid)  # (B*T, dim, H/2, W/2)
        pixels = pixels.permute(0, 2, 3, 1).reshape(batch, frames, *pixels.shape[-2:], self.dim)

        queries = self.instance_embed.weight[:, None, :] + frame_encoding(frames, self.dim, memory.device)[None]
        hs = queries.reshape(1, -1, self.dim).expand(batch, -1, -1)  # (B, Q*T, dim), q-major
        for k in range(1, self._decoders + 1):
            hs = getattr(self, f"decoder{k}")(hs, memory)
        return self._heads(hs, pixels, (height, width))

    def _heads(self, hs: Tensor, pixels: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Class logits (B, Q, K + 1) and mask logits (B, Q, T, H, W) from decoder tokens
        (B, Q*T, dim) and pixel embeddings (B, T, h, w, dim)."""
        batch, frames, h2, w2, _ = pixels.shape
        hs = hs.reshape(batch, self.num_queries, frames, self.dim)
        masks = torch.einsum("bqtc,bthwc->bqthw", self.mask_embed(hs), pixels) / math.sqrt(self.dim)
        masks = masks.reshape(batch * self.num_queries, 1, frames, h2, w2)
        masks = (masks + self.refine(masks)).squeeze(1)  # (B*Q, T, H/2, W/2)
        # The class reads the instance's tokens and the pixel embeddings under its mask: at stride 8
        # an object of a small clip covers a token or two, too coarse for its shape.
        weights = masks.sigmoid().view(batch, self.num_queries, frames, h2, w2)
        pooled = torch.einsum("bqthw,bthwc->bqc", weights, pixels) / weights.sum((2, 3, 4))[..., None].clamp(min=1e-3)
        class_logits = self.class_head(hs.mean(dim=2) + self.pool_proj(pooled))
        if (h2, w2) != size:
            masks = F.interpolate(masks, size=size, mode="bilinear", align_corners=False)
        return class_logits, masks.view(batch, self.num_queries, frames, *size)

    def forward(self, clips: Tensor) -> Tensor:
        return pack_outputs(*self.forward_parts(clips))

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config.items())


def vistr(
    num_classes: int,
    *,
    backbone: str = "r50",
    width: int = 8,
    dim: int = 32,
    heads: int = 2,
    encoder_layers: int = 2,
    decoder_layers: int = 2,
    queries: int = 6,
    blocks: tuple[int, ...] | None = None,
) -> VisTR:
    """A VisTR-like model (see :mod:`stdyn.models.vis`) with ``queries`` instance queries and
    ``num_classes`` classes plus "no object".

    ``backbone``: "r50" (one residual block per stage) or "r101" (two); ``blocks`` overrides the
    blocks per stage (4 ints). ``width``: the first backbone stage's channels (then 2w, 4w, 8w);
    ``dim``, ``heads``: the transformer's width and heads; ``encoder_layers``,
    ``decoder_layers``: 6 and 6 in the paper.
    """
    return VisTR(num_classes, backbone=backbone, width=width, dim=dim, heads=heads,
                 encoder_layers=encoder_layers, decoder_layers=decoder_layers, queries=queries, blocks=blocks)


def vistr_r50(num_classes: int, *, width: int = 8, dim: int = 32, heads: int = 2, encoder_layers: int = 2,
              decoder_layers: int = 2, queries: int = 6, blocks: tuple[int, ...] | None = None) -> VisTR:
    """:func:`vistr` with the ResNet-50 stand-in backbone (one residual block per stage)."""
    return vistr(num_classes, backbone="r50", width=width, dim=dim, heads=heads, encoder_layers=encoder_layers,
                 decoder_layers=decoder_layers, queries=queries, blocks=blocks)


def vistr_r101(num_classes: int, *, width: int = 8, dim: int = 32, heads: int = 2, encoder_layers: int = 2,
               decoder_layers: int = 2, queries: int = 6, blocks: tuple[int, ...] | None = None) -> VisTR:
    """:func:`vistr` with the ResNet-101 stand-in backbone (two residual blocks per stage)."""
    return vistr(num_classes, backbone="r101", width=width, dim=dim, heads=heads, encoder_layers=encoder_layers,
                 decoder_layers=decoder_layers, queries=queries, blocks=blocks)


VIS_MODELS: dict[str, Callable[..., VisTR]] = {"vistr_r50": vistr_r50, "vistr_r101": vistr_r101}
"""The named configurations: ``VIS_MODELS[name](num_classes, **overrides)`` (e.g. ``dim=64``)."""
