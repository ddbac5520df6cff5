"""Two-stream video object segmentation (AVOS) models: an RGB frame and a flow image in, mask logits out.

::

    model = VOS_MODELS["matnet"]()                   # or TwoStreamVOS(cross="U", fusion="G", boundary=True)
    logits = model(rgb, flow_image)                  # (B, 3, H, W) each, in [0, 1] -> (B, 1, H, W)
    loss = vos_loss(logits, masks, model.last_boundary_logits)

The small, CPU-trainable stand-ins for the AVOS models of the paper's fusion and cross-connection
study (Sec. 5.3): frame-level 2D networks with

- an *appearance* encoder on the RGB frame and a *motion* encoder on the flow image (HSV-encoded
  optical flow, :func:`stdyn.data.flow.flow_to_image`), five stages each: ``stage 1`` a stem at the
  input resolution (two 3x3 convolutions), stages 2-5 a residual block with stride 2; widths
  ``(w, w, 2w, 4w, 8w)``;
- *cross connections* after every stage (``cross``): ``"none"``; ``"U"``, motion-to-appearance as
  in MATNet's MAT block, ``a <- a + a ∘ sigmoid(conv1x1(m))``; ``"B"``, bidirectional as in
  RTNet, the same from appearance to motion at the same time, ``m <- m + m ∘ sigmoid(conv1x1(a))``
  (both computed from the features before the exchange). The exchanged features feed the next
  stage of each stream;
- a *fusion* layer (:mod:`stdyn.models.fusion`: ``"G"``, ``"CCG"``, ``"concat"``, ``"sum"``)
  after every stage in ``fusion_stages``; fused features never flow back into the streams;
- a U-Net-like *decoder* over the fused features of every fused stage (deepest first: upsample,
  concatenate with the next fused stage, 3x3 convolution), upsampled to the input size, and a
  1x1 convolution to the mask logits; with ``boundary=True`` a boundary-aware refinement as in
  MATNet's BAR: a boundary head predicts object boundaries from the full-resolution decoder
  features, and the mask head sees the features together with the predicted boundary map.

Measurable stages (``model.stages``; the output of each is (B, C, H, W) under a forward hook):

- ``appearance{k}`` / ``motion{k}`` (kinds "appearance" / "motion"): stream k's features after
  its cross connection, the features that stage k+1 and fusion k see (identity modules,
  :class:`StreamOutput`, called on them). The encoder blocks before the exchange are
  ``appearance_stage{k}`` / ``motion_stage{k}``, the exchange itself ``cross{k}``;
- ``fusion{k}`` (kind "fusion") for every k in ``fusion_stages``.

Encoder stages after the deepest fused stage would feed nothing, so they are not built.
Single-stream baselines (``streams=("appearance",)`` or ``("motion",)``) have no cross
connection and no fusion: the decoder reads the stream's own features at ``fusion_stages``.
Every model takes both inputs, so every model of the study is called the same way; the probe's
list input ``model([rgb, flow_image])`` works too.

Both inputs are normalised inside the model (ImageNet mean and std per colour channel, as the
ImageNet-initialised encoders of MATNet and RTNet expect; flow images are normalised like frames,
as those models do).
"""
from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stdyn.models.fusion import FUSIONS, make_fusion
from stdyn.models.layers import Normalize, Stage, Transient, init_weights

__all__ = [
    "CROSS_CONNECTIONS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "VOS_MODELS",
    "CrossConnection",
    "StreamOutput",
    "TwoStreamVOS",
    "boundary_loss",
    "boundary_targets",
    "build",
    "dice_loss",
    "mask_loss",
    "parameter_count",
    "stage_channels",
    "vos_loss",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROSS_CONNECTIONS = ("none", "U", "B")
STREAMS = ("appearance", "motion")


# ---------------------------------------------------------------------------------------------
# Layers


def conv_bn(in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1,
            relu: bool = True) -> nn.Sequential:
    """Conv2d ('same' padding, no bias), BatchNorm2d and an optional ReLU."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
    ]
    if relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class ResidualBlock2d(nn.Module):
    """``relu(shortcut(x) + branch(x))``: two 3x3 convolutions (the first with ``stride``); the
    shortcut is a strided 1x1 projection where the shape changes. The last BN starts at zero, so a
    new block starts as (a projection of) its input."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.branch = nn.Sequential(
            conv_bn(in_channels, out_channels, 3, stride),
            conv_bn(out_channels, out_channels, 3, relu=False),
        )
        self.shortcut: nn.Module = (
            nn.Identity() if in_channels == out_channels and stride == 1
            else conv_bn(in_channels, out_channels, 1, stride, relu=False)
        )
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.shortcut(x) + self.branch(x))


def encoder_stage(k: int, in_channels: int, out_channels: int) -> nn.Module:
    """Stage ``k`` of a stream: the stem (k = 1: two 3x3 convolutions at the input resolution) or a
    residual block with stride 2 (k = 2..5)."""
    if k == 1:
        return nn.Sequential(conv_bn(in_channels, out_channels), conv_bn(out_channels, out_channels))
    return ResidualBlock2d(in_channels, out_channels, stride=2)


def stage_channels(width: int) -> tuple[int, ...]:
    """Output channels of stages 1..5: ``(w, w, 2w, 4w, 8w)``."""
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive int, got {width!r}")
    return (width, width, 2 * width, 4 * width, 8 * width)


class StreamOutput(nn.Identity):
    """A stream's features after its cross connection: an identity module called on them, so that a
    forward hook on its name sees them."""


class CrossConnection(nn.Module):
    """Cross connections between the streams at one stage.

    Motion to appearance (both kinds): ``a <- a + a ∘ sigmoid(motion_to_appearance(m))``, the
    motion-attentive transition of MATNet (a 1x1 convolution of the motion features gates the
    appearance features, channel by channel and pixel by pixel; the residual keeps them when the
    gate closes). With ``bidirectional`` (RTNet's reciprocal transformation) also appearance to
    motion, ``m <- m + m ∘ sigmoid(appearance_to_motion(a))``; both directions read the features
    from before the exchange.
    """

    def __init__(self, channels: int, bidirectional: bool = False) -> None:
        super().__init__()
        self.bidirectional = bidirectional
        self.motion_to_appearance = nn.Conv2d(channels, channels, 1)
        self.appearance_to_motion = nn.Conv2d(channels, channels, 1) if bidirectional else None

    def forward(self, a: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
        new_a = a + a * torch.sigmoid(self.motion_to_appearance(m))
        new_m = m + m * torch.sigmoid(self.appearance_to_motion(a)) if self.appearance_to_motion is not None else m
        return new_a, new_m

    def extra_repr(self) -> str:
        return "bidirectional=True" if self.bidirectional else "motion to appearance"


class Decoder(nn.Module):
    """U-Net-like decoder over the features of the fused stages.

    From the deepest fused stage up: upsample (bilinear) to the next fused stage's size,
    concatenate, ``up{k}`` (3x3 conv, BN, ReLU to that stage's channels); then upsample to the
    input size, ``refine`` (3x3 conv, BN, ReLU) and ``mask`` (1x1 conv to ``num_outputs``).
    With ``boundary``: ``boundary`` (3x3 conv, BN, ReLU, 1x1 conv) predicts boundary logits from
    the refined features and ``bar`` (3x3 conv, BN, ReLU) merges the features with the boundary
    probabilities before ``mask``.
    """

    def __init__(self, channels: Mapping[int, int], num_outputs: int = 1, boundary: bool = False) -> None:
        super().__init__()
        self.levels = sorted(channels, reverse=True)
        previous = channels[self.levels[0]]
        for k in self.levels[1:]:
            self.add_module(f"up{k}", conv_bn(previous + channels[k], channels[k]))
            previous = channels[k]
        self.refine = conv_bn(previous, previous)
        self.boundary: nn.Module | None = None
        self.bar: nn.Module | None = None
        if boundary:
            self.boundary = nn.Sequential(conv_bn(previous, previous), nn.Conv2d(previous, 1, 1))
            self.bar = conv_bn(previous + 1, previous)
        self.mask = nn.Conv2d(previous, num_outputs, 1)

    def forward(self, features: Mapping[int, Tensor], size: Sequence[int]) -> tuple[Tensor, Tensor | None]:
        x = features[self.levels[0]]
        for k in self.levels[1:]:
            skip = features[k]
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = getattr(self, f"up{k}")(torch.cat([x, skip], dim=1))
        if tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
        x = self.refine(x)
        boundary_logits = None
        if self.boundary is not None and self.bar is not None:
            boundary_logits = self.boundary(x)
            x = self.bar(torch.cat([x, torch.sigmoid(boundary_logits)], dim=1))
        return self.mask(x), boundary_logits


# ---------------------------------------------------------------------------------------------
# The model


class TwoStreamVOS(nn.Module):
    """A two-stream (or single-stream baseline) segmentation model; see the module docstring.

    ``forward(rgb, flow_image)`` takes (B, 3, H, W) batches in [0, 1] and returns mask logits
    (B, num_outputs, H, W). ``forward([rgb, flow_image])`` is the same. With ``boundary=True``
    the boundary logits (B, 1, H, W) of the same pass are kept in ``last_boundary_logits``
    (attached to the graph, so that :func:`vos_loss` can train them), and
    ``forward(..., return_boundary=True)`` returns ``(mask_logits, boundary_logits)``.

    ``cross``: "none", "U" (motion to appearance, MATNet) or "B" (both ways, RTNet). ``fusion``:
    "G" (MATNet's gated fusion), "CCG" (RTNet's convex-combination gated fusion), "concat" or
    "sum", after every stage in ``fusion_stages``. ``boundary``: MATNet's boundary-aware
    refinement. ``streams=("appearance",)`` or ``("motion",)``: a single-stream baseline.
    ``reduction``: the squeeze-and-excitation reduction; ``spatial_kernel``: the kernel of the
    spatial attention convolutions.
    """

    def __init__(
        self,
        num_outputs: int = 1,
        width: int = 16,
        cross: str = "none",
        fusion: str = "G",
        fusion_stages: Sequence[int] = (1, 2, 3, 4, 5),
        boundary: bool = False,
        streams: Sequence[str] = STREAMS,
        reduction: int = 4,
        spatial_kernel: int = 3,
    ) -> None:
        super().__init__()
        streams = tuple(streams)
        if not streams or len(set(streams)) != len(streams) or not set(streams) <= set(STREAMS):
            raise ValueError(f"streams must be ('appearance', 'motion') or one of them, got {streams!r}")
        if cross not in CROSS_CONNECTIONS:
            raise ValueError(f"cross must be one of {CROSS_CONNECTIONS}, got {cross!r}")
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {tuple(FUSIONS)}, got {fusion!r}")
        fused = tuple(sorted(set(int(k) for k in fusion_stages)))
        if not fused or not set(fused) <= {1, 2, 3, 4, 5}:
            raise ValueError(f"fusion_stages must be a non-empty subset of 1..5, got {tuple(fusion_stages)!r}")
        if len(streams) == 1 and cross != "none":
            raise ValueError(f"a single-stream model has no cross connections (cross={cross!r})")
        if not isinstance(num_outputs, int) or num_outputs < 1:
            raise ValueError(f"num_outputs must be a positive int, got {num_outputs!r}")
        channels = stage_channels(width)
        two = len(streams) == 2
        self.num_outputs, self.width, self.cross, self.boundary = num_outputs, width, cross, boundary
        self.fusion = fusion if two else None
        self.fusion_stages, self.streams = fused, streams
        self.depth = fused[-1]
        self.config = {
            "num_outputs": num_outputs, "width": width, "cross": cross, "fusion": fusion,
            "fusion_stages": fused, "boundary": boundary, "streams": streams,
            "reduction": reduction, "spatial_kernel": spatial_kernel,
        }

        if "appearance" in streams:
            self.normalize_rgb = Normalize(IMAGENET_MEAN, IMAGENET_STD, frames=True, what="rgb frames")
        if "motion" in streams:
            self.normalize_flow = Normalize(IMAGENET_MEAN, IMAGENET_STD, frames=True, what="flow images")
        self.stages: list[Stage] = []
        in_channels = 3
        for k in range(1, self.depth + 1):
            c = channels[k - 1]
            for stream in streams:
                self.add_module(f"{stream}_stage{k}", encoder_stage(k, in_channels, c))
            if two and cross != "none":
                self.add_module(f"cross{k}", CrossConnection(c, bidirectional=cross == "B"))
            for stream in streams:
                self.add_module(f"{stream}{k}", StreamOutput())
                self.stages.append(Stage(f"{stream}{k}", c, stream, k))
            if two and k in fused:
                self.add_module(f"fusion{k}", make_fusion(fusion, c, reduction, spatial_kernel))
                self.stages.append(Stage(f"fusion{k}", c, "fusion", k))
            in_channels = c
        self.decoder = Decoder({k: channels[k - 1] for k in fused}, num_outputs, boundary)
        self._transient = Transient()
        init_weights(self)
        for module in self.modules():
            if isinstance(module, ResidualBlock2d):
                nn.init.zeros_(module.branch[-1][1].weight)

    @property
    def last_boundary_logits(self) -> Tensor | None:
        """The boundary logits (B, 1, H, W) of the last forward pass (None without ``boundary``)."""
        return self._transient.get("boundary_logits")

    def features(self, rgb: Tensor, flow_image: Tensor) -> dict[int, Tensor]:
        """The features the decoder reads, by stage: the fused features of every fused stage (the
        stream's own features for a single-stream model)."""
        a = self.normalize_rgb(rgb) if "appearance" in self.streams else None
        m = self.normalize_flow(flow_image) if "motion" in self.streams else None
        if a is not None and m is not None and a.shape != m.shape:
            raise ValueError(f"rgb {tuple(rgb.shape)} and flow image {tuple(flow_image.shape)} differ in shape")
        out: dict[int, Tensor] = {}
        for k in range(1, self.depth + 1):
            if a is not None:
                a = getattr(self, f"appearance_stage{k}")(a)
            if m is not None:
                m = getattr(self, f"motion_stage{k}")(m)
            if a is not None and m is not None and self.cross != "none":
                a, m = getattr(self, f"cross{k}")(a, m)
            if a is not None:
                a = getattr(self, f"appearance{k}")(a)
            if m is not None:
                m = getattr(self, f"motion{k}")(m)
            if k in self.fusion_stages:
                if a is not None and m is not None:
                    out[k] = getattr(self, f"fusion{k}")(a, m)
                else:
                    out[k] = a if a is not None else m
        return out

    def forward(self, rgb: Tensor | Sequence[Tensor], flow_image: Tensor | None = None,
                return_boundary: bool = False) -> Tensor | tuple[Tensor, Tensor | None]:
        if flow_image is None:
            if not isinstance(rgb, (list, tuple)) or len(rgb) != 2:
                raise ValueError("call model(rgb, flow_image) or model([rgb, flow_image]) with (B, 3, H, W) batches")
            rgb, flow_image = rgb
        logits, boundary_logits = self.decoder(self.features(rgb, flow_image), rgb.shape[-2:])
        self._transient["boundary_logits"] = boundary_logits
        if return_boundary:
            return logits, boundary_logits
        return logits

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config.items())


VOS_MODELS: dict[str, Callable[..., TwoStreamVOS]] = {
    # FusionSeg merges an appearance and a motion network that never talk to each other; ours
    # fuses their features by concatenation and a 1x1 convolution at stage 2 and stage 5 (its
    # fusion points measured in the paper), with no attention.
    "fusionseg": partial(TwoStreamVOS, cross="none", fusion="concat", fusion_stages=(2, 5)),
    "matnet": partial(TwoStreamVOS, cross="U", fusion="G", boundary=True),
    "matnet_nobar": partial(TwoStreamVOS, cross="U", fusion="G"),
    "matnet_star": partial(TwoStreamVOS, cross="U", fusion="CCG"),
    "rtnet": partial(TwoStreamVOS, cross="B", fusion="CCG"),
    "rtnet_star": partial(TwoStreamVOS, cross="B", fusion="G"),
    "appearance_only": partial(TwoStreamVOS, streams=("appearance",)),
    "motion_only": partial(TwoStreamVOS, streams=("motion",)),
}
"""The named configurations: ``VOS_MODELS[name](**overrides)`` (e.g. ``width=32``)."""


def build(name: str, seed: int | None = None, **kwargs: Any) -> TwoStreamVOS:
    """``VOS_MODELS[name](**kwargs)``, its random initialisation drawn from ``seed`` if given
    (without touching the global random state)."""
    if name not in VOS_MODELS:
        close = difflib.get_close_matches(name, list(VOS_MODELS), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"unknown VOS model {name!r}.{hint} Available: {', '.join(VOS_MODELS)}")
    if seed is None:
        return VOS_MODELS[name](**kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return VOS_MODELS[name](**kwargs)


# ---------------------------------------------------------------------------------------------
# Losses


def _as_mask_batch(masks: Tensor, like: Tensor) -> Tensor:
    """Masks (B, H, W) or (B, 1, H, W) (bool or {0, 1}) as a float tensor shaped like ``like``."""
    if masks.dim() == like.dim() - 1:
        masks = masks.unsqueeze(1)
    if masks.shape != like.shape:
        raise ValueError(f"masks {tuple(masks.shape)} do not match logits {tuple(like.shape)}")
    return masks.to(like.dtype)


def dice_loss(logits: Tensor, masks: Tensor, smooth: float = 1.0) -> Tensor:
    """Soft Dice loss ``1 - (2 Σ p t + s) / (Σ p + Σ t + s)`` per frame (p = sigmoid(logits)),
    averaged over frames."""
    target = _as_mask_batch(masks, logits)
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    dice = (2 * (p * t).sum(1) + smooth) / (p.sum(1) + t.sum(1) + smooth)
    return (1 - dice).mean()


def mask_loss(logits: Tensor, masks: Tensor, dice_weight: float = 0.0) -> Tensor:
    """Binary cross-entropy with logits (mean over pixels) plus ``dice_weight`` x :func:`dice_loss`."""
    target = _as_mask_batch(masks, logits)
    loss = F.binary_cross_entropy_with_logits(logits, target)
    if dice_weight:
        loss = loss + dice_weight * dice_loss(logits, target)
    return loss


def boundary_targets(masks: Tensor, width: int = 1) -> Tensor:
    """Object boundaries of masks (B, 1, H, W) or (B, H, W): the pixels within ``width`` of the
    other label (morphological dilation minus erosion with a (2 width + 1)^2 square), as a float
    (B, 1, H, W) map. The image border is not a boundary."""
    if masks.dim() == 3:
        masks = masks.unsqueeze(1)
    m = masks.float()
    size = 2 * width + 1
    dilated = F.max_pool2d(m, size, stride=1, padding=width)
    eroded = -F.max_pool2d(-m, size, stride=1, padding=width)
    return dilated - eroded


def boundary_loss(boundary_logits: Tensor, masks: Tensor, width: int = 1) -> Tensor:
    """Class-balanced BCE on object boundaries (HED's weighting, as MATNet trains its boundary
    maps): per frame, boundary pixels weigh the share of non-boundary pixels ``beta`` and the
    others ``1 - beta``; mean over pixels and frames."""
    target = boundary_targets(masks, width).to(boundary_logits.dtype)
    if target.shape != boundary_logits.shape:
        raise ValueError(f"boundary logits {tuple(boundary_logits.shape)} do not match masks {tuple(target.shape)}")
    beta = 1 - target.mean(dim=(1, 2, 3), keepdim=True)
    weight = beta * target + (1 - beta) * (1 - target)
    bce = F.binary_cross_entropy_with_logits(boundary_logits, target, reduction="none")
    return (weight * bce).mean()


def vos_loss(logits: Tensor, masks: Tensor, boundary_logits: Tensor | None = None, dice_weight: float = 0.0,
             boundary_weight: float = 1.0) -> Tensor:
    """The training loss: :func:`mask_loss`, plus ``boundary_weight`` x :func:`boundary_loss` when
    ``boundary_logits`` are given (``model.last_boundary_logits`` of a ``boundary=True`` model)."""
    loss = mask_loss(logits, masks, dice_weight)
    if boundary_logits is not None and boundary_weight:
        loss = loss + boundary_weight * boundary_loss(boundary_logits, masks)
    return loss


def parameter_count(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

