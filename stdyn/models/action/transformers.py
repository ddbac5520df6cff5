"""Small video transformers: TimeSformer (divided space-time attention) and MViT (pooling attention).

Both keep their tokens as (B, N, C) between blocks, so every block's output is measurable as
tokens; the head averages the tokens (no class token).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stdyn.models.layers import ClassifierHead, DepthwiseConv3d, Normalize, Stage, TemporalSubsample, init_weights

Grid = tuple[int, int, int]  # token grid (T, H, W)
STEMS = ("conv", "patch")  # how TimeSformer turns frames into tokens


class SeparablePositionEmbedding(nn.Module):
    """Learned spatial (H x W) plus temporal (T) position embeddings, resized when the grid differs."""

    def __init__(self, dim: int, grid: Grid) -> None:
        super().__init__()
        frames, height, width = grid
        self.spatial = nn.Parameter(torch.zeros(1, dim, height, width))
        self.temporal = nn.Parameter(torch.zeros(1, dim, frames))
        nn.init.trunc_normal_(self.spatial, std=0.02)
        nn.init.trunc_normal_(self.temporal, std=0.02)

    def forward(self, tokens: Tensor, grid: Grid) -> Tensor:
        frames, height, width = grid
        spatial = self.spatial
        if spatial.shape[-2:] != (height, width):
            spatial = F.interpolate(spatial, size=(height, width), mode="bilinear", align_corners=False)
        temporal = self.temporal
        if temporal.shape[-1] != frames:
            temporal = F.interpolate(temporal, size=frames, mode="linear", align_corners=False)
        # (1, C, T, H, W) in the same t-major order as the tokens
        position = temporal[:, :, :, None, None] + spatial[:, :, None, :, :]
        return tokens + position.flatten(2).transpose(1, 2)


class PatchEmbed(nn.Module):
    """Conv3d patchify (B, 3, T, H, W) -> tokens (B, T'H'W', C), t-major, and the grid (T', H', W')."""

    def __init__(self, dim: int, kernel: Grid, stride: Grid) -> None:
        super().__init__()
        padding = tuple((k - s + 1) // 2 for k, s in zip(kernel, stride))
        self.proj = nn.Conv3d(3, dim, kernel, stride=stride, padding=padding)

    def forward(self, clips: Tensor) -> tuple[Tensor, Grid]:
        return grid_to_tokens(self.proj(clips))


def grid_to_tokens(x: Tensor) -> tuple[Tensor, Grid]:
    """(B, C, T, H, W) -> tokens (B, T*H*W, C), t-major, and the grid (T, H, W)."""
    return x.flatten(2).transpose(1, 2), tuple(x.shape[2:])  # type: ignore[return-value]


class ConvStem(nn.Module):
    """Convolutional patchify: log2(``patch``) stride-2 3x3 convolutions per frame (BatchNorm, ReLU),
    then a 1x1 projection to ``dim``; tokens and grid as :class:`PatchEmbed` (a patch of
    ``patch`` x ``patch`` pixels per token). Early convolutions let a small transformer see thin
    structures (limbs) that one linear patch projection misses at low resolution."""

    def __init__(self, dim: int, patch: int) -> None:
        super().__init__()
        steps = patch.bit_length() - 1
        if patch < 2 or 2**steps != patch:
            raise ValueError(f"a convolutional stem needs a patch size that is a power of two >= 2, got {patch}")
        layers: list[nn.Module] = []
        channels = 3
        for step in range(steps):
            width = max(8, dim >> (steps - 1 - step))
            layers += [nn.Conv3d(channels, width, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), bias=False),
                       nn.BatchNorm3d(width), nn.ReLU(inplace=True)]
            channels = width
        layers.append(nn.Conv3d(channels, dim, 1))
        self.proj = nn.Sequential(*layers)

    def forward(self, clips: Tensor) -> tuple[Tensor, Grid]:
        return grid_to_tokens(self.proj(clips))


class FusedQKV(nn.Linear):
    """One linear layer computing queries, keys and values side by side: (..., C) -> (..., 3C)."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim, 3 * dim)


class Attention(nn.Module):
    """Multi-head self-attention over (B, N, C) tokens."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.heads = heads
        self.qkv = FusedQKV(dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        batch, length, dim = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, length, dim))


def init_transformer_weights(model: nn.Module) -> None:
    """Xavier-uniform linear layers, as in the original ViT (fused q, k, v as three separate
    layers), except the classifier; the rest as :func:`init_weights`.

    The ``std=0.02`` initialisation of large ViTs is far below Xavier at these widths (0.02 vs
    about 0.09 at width 64), and such a network starts nearly linear: on small data it then sits
    at chance for hundreds of steps before it learns.
    """
    init_weights(model)
    classifier = getattr(getattr(model, "head", None), "fc", None)
    for module in model.modules():
        if isinstance(module, nn.Linear) and module is not classifier:
            fan_out, fan_in = module.weight.shape
            if isinstance(module, FusedQKV):
                fan_out //= 3
            bound = (6.0 / (fan_in + fan_out)) ** 0.5
            nn.init.uniform_(module.weight, -bound, bound)


def mlp(dim: int, hidden: int, out_dim: int | None = None) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim or dim))


class DividedSpaceTimeBlock(nn.Module):
    """TimeSformer block: temporal attention (same position across frames), then spatial (within a frame), then MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm_time = nn.LayerNorm(dim)
        self.attn_time = Attention(dim, heads)
        self.time_fc = nn.Linear(dim, dim)
        self.norm_space = nn.LayerNorm(dim)
        self.attn_space = Attention(dim, heads)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = mlp(dim, round(dim * mlp_ratio))

    def forward(self, x: Tensor, grid: Grid) -> Tensor:
        batch, _, dim = x.shape
        frames, height, width = grid
        positions = height * width
        # temporal attention: sequences of `frames` tokens, one per spatial position
        xt = x.view(batch, frames, positions, dim).transpose(1, 2).reshape(batch * positions, frames, dim)
        xt = self.time_fc(self.attn_time(self.norm_time(xt)))
        x = x + xt.view(batch, positions, frames, dim).transpose(1, 2).reshape(batch, -1, dim)
        # spatial attention: sequences of `positions` tokens, one per frame
        xs = x.reshape(batch * frames, positions, dim)
        x = x + self.attn_space(self.norm_space(xs)).view(batch, -1, dim)
        return x + self.mlp(self.norm_mlp(x))


class TimeSformer(nn.Module):
    """``normalize``, ``sample``, ``embed`` (per-frame patches), ``pos``, ``blocks.*``, ``norm``, ``head``.

    Like the paper's TimeSformer (8 frames, 32 apart), it sees a sparse set of frames: every
    ``frame_stride``-th frame of the clip.
    """

    def __init__(
        self,
        num_classes: int,
        dim: int = 64,
        depth: int = 4,
        heads: int = 4,
        patch: int = 8,
        frames: int = 16,
        size: int = 32,
        frame_stride: int = 2,
        dropout: float = 0.0,
        stem: str = "conv",
    ) -> None:
        super().__init__()
        self.normalize = Normalize()
        self.sample = TemporalSubsample(frame_stride)
        if stem not in STEMS:
            raise ValueError(f"unknown stem {stem!r}; choose one of {STEMS}")
        self.embed = ConvStem(dim, patch) if stem == "conv" else PatchEmbed(dim, (1, patch, patch), (1, patch, patch))
        grid = (-(-frames // frame_stride), size // patch, size // patch)
        self.pos = SeparablePositionEmbedding(dim, grid)
        self.blocks = nn.ModuleList(DividedSpaceTimeBlock(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = ClassifierHead(dim, num_classes, dropout, tokens=True)
        self.stages = [Stage(f"blocks.{i}", dim, "block") for i in range(depth)]
        init_transformer_weights(self)
        for block in self.blocks[1:]:
            # as in TimeSformer: the temporal branch of every block but the first starts switched off
            nn.init.zeros_(block.time_fc.weight)
            nn.init.zeros_(block.time_fc.bias)

    def forward(self, clips: Tensor) -> Tensor:
        x, grid = self.embed(self.sample(self.normalize(clips)))
        x = self.pos(x, grid)
        for block in self.blocks:
            x = block(x, grid)
        return self.head(self.norm(x))


def tokens_to_grid(tokens: Tensor, grid: Grid) -> Tensor:
    """(B, T*H*W, C) tokens as a (B, C, T, H, W) view (channels-last memory, no copy)."""
    return tokens.transpose(1, 2).unflatten(2, grid)


def _pool_padding(kernel: Grid) -> Grid:
    return tuple(k // 2 for k in kernel)  # type: ignore[return-value]


class TokenPool(nn.Module):
    """Pool tokens on their (T, H, W) grid: depthwise conv with ``stride``, then LayerNorm."""

    def __init__(self, dim: int, stride: Grid, kernel: Grid = (3, 3, 3)) -> None:
        super().__init__()
        self.pool = DepthwiseConv3d(dim, kernel, stride)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, grid: Grid) -> Tensor:
        return self.norm(self.pool(tokens_to_grid(x, grid)).flatten(2).transpose(1, 2))


class PoolingAttention(nn.Module):
    """Multi-head pooling attention: queries pooled by ``q_stride``, keys and values by ``kv_stride``.

    A stride of 1 everywhere means no pooling (the tokens pass unchanged).
    """

    def __init__(self, dim: int, heads: int, q_stride: Grid, kv_stride: Grid) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.heads = heads
        self.q_stride = q_stride
        self.qkv = FusedQKV(dim)
        pools_kv = any(s > 1 for s in kv_stride)
        self.pool_q = TokenPool(dim, q_stride) if any(s > 1 for s in q_stride) else None
        self.pool_k = TokenPool(dim, kv_stride) if pools_kv else None
        self.pool_v = TokenPool(dim, kv_stride) if pools_kv else None
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, grid: Grid) -> Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q = self.pool_q(q, grid) if self.pool_q is not None else q
        k = self.pool_k(k, grid) if self.pool_k is not None else k
        v = self.pool_v(v, grid) if self.pool_v is not None else v
        batch, length, dim = q.shape

        def split_heads(t: Tensor) -> Tensor:
            return t.reshape(batch, -1, self.heads, dim // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(split_heads(q), split_heads(k), split_heads(v))
        return self.proj(out.transpose(1, 2).reshape(batch, length, dim))


class MultiScaleBlock(nn.Module):
    """MViT block: pooling attention (skip path max-pooled alike), MLP that may change the width."""

    def __init__(
        self, dim: int, dim_out: int, heads: int, q_stride: Grid, kv_stride: Grid, mlp_ratio: float = 4.0
    ) -> None:
        super().__init__()
        self.norm_attn = nn.LayerNorm(dim)
        self.attn = PoolingAttention(dim, heads, q_stride, kv_stride)
        skip_kernel = tuple(s + 1 if s > 1 else s for s in q_stride)
        self.pool_skip = (
            nn.MaxPool3d(skip_kernel, stride=q_stride, padding=_pool_padding(skip_kernel))
            if any(s > 1 for s in q_stride)
            else None
        )
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = mlp(dim, round(dim * mlp_ratio), dim_out)
        self.proj = nn.Linear(dim, dim_out) if dim != dim_out else None

    def forward(self, x: Tensor, grid: Grid) -> Tensor:
        attended = self.attn(self.norm_attn(x), grid)
        if self.pool_skip is not None:
            x = self.pool_skip(tokens_to_grid(x, grid)).flatten(2).transpose(1, 2)
        x = x + attended
        normed = self.norm_mlp(x)
        skip = self.proj(normed) if self.proj is not None else x
        return skip + self.mlp(normed)

    def output_grid(self, grid: Grid) -> Grid:
        """The token grid after this block's query pooling."""
        return _strided_grid(grid, self.attn.q_stride)


def _strided_grid(grid: Grid, stride: Sequence[int]) -> Grid:
    return tuple(-(-g // s) for g, s in zip(grid, stride))  # type: ignore[return-value]


class MViT(nn.Module):
    """``normalize``, ``sample``, ``embed`` (3x7x7 cubes, stride 2x4x4), ``pos``, ``blocks.*``, ``norm``, ``head``.

    ``stage_depths`` blocks per scale; each new scale halves the spatial token grid (query pooling
    in its first block) and doubles width and heads (in the last block of the previous scale, as
    in MViT). Keys and values are pooled with spatial stride ``kv_stride`` in the first scale, half
    that in each following one (never below 1, where they are not pooled).
    """

    def __init__(
        self,
        num_classes: int,
        dim: int = 32,
        stage_depths: Sequence[int] = (1, 2, 2),
        heads: int = 1,
        frames: int = 16,
        size: int = 32,
        kv_stride: int = 4,
        dropout: float = 0.0,
        frame_stride: int = 1,
    ) -> None:
        super().__init__()
        embed_stride = (2, 4, 4)
        self.normalize = Normalize()
        self.sample = TemporalSubsample(frame_stride)
        self.embed = PatchEmbed(dim, (3, 7, 7), embed_stride)
        grid = _strided_grid((-(-frames // frame_stride), size, size), embed_stride)
        self.pos = SeparablePositionEmbedding(dim, grid)
        blocks = []
        stages = []
        kv = kv_stride
        for scale, count in enumerate(stage_depths):
            for b in range(count):
                first = b == 0 and scale > 0
                last_of_scale = b == count - 1 and scale < len(stage_depths) - 1
                if first:
                    kv = max(1, kv // 2)
                dim_out = dim * 2 if last_of_scale else dim
                blocks.append(
                    MultiScaleBlock(
                        dim,
                        dim_out,
                        heads * 2**scale,
                        q_stride=(1, 2, 2) if first else (1, 1, 1),
                        kv_stride=(1, kv, kv),
                    )
                )
                stages.append(Stage(f"blocks.{len(blocks) - 1}", dim_out, "block"))
                dim = dim_out
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(dim)
        self.head = ClassifierHead(dim, num_classes, dropout, tokens=True)
        self.stages = stages
        init_transformer_weights(self)

    def forward(self, clips: Tensor) -> Tensor:
        x, grid = self.embed(self.sample(self.normalize(clips)))
        x = self.pos(x, grid)
        for block in self.blocks:
            x = block(x, grid)
            grid = block.output_grid(grid)
        return self.head(self.norm(x))


def timesformer(
    num_classes: int,
    dim: int = 64,
    depth: int = 4,
    heads: int = 4,
    patch: int = 8,
    frames: int = 16,
    size: int = 32,
    frame_stride: int = 2,
    dropout: float = 0.0,
    stem: str = "conv",
) -> TimeSformer:
    """TimeSformer: divided space-time attention on ``patch`` x ``patch`` patches of every ``frame_stride``-th frame.

    ``frames`` and ``size`` (of the clips) set the position-embedding grid; other clip sizes are
    interpolated. ``stem="conv"`` (default) embeds patches with a few small convolutions,
    ``"patch"`` with the original single linear projection.
    """
    return TimeSformer(num_classes, dim, depth, heads, patch, frames, size, frame_stride, dropout, stem)


def mvit(
    num_classes: int,
    dim: int = 32,
    stage_depths: Sequence[int] = (1, 2, 2),
    heads: int = 1,
    frames: int = 16,
    size: int = 32,
    kv_stride: int = 4,
    dropout: float = 0.0,
    frame_stride: int = 1,
) -> MViT:
    """MViT (v1 style) with three scales of widths ``dim`` x (1, 2, 4) by default, on every
    ``frame_stride``-th frame."""
    return MViT(num_classes, dim, stage_depths, heads, frames, size, kv_stride, dropout, frame_stride)
