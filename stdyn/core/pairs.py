"""What is compared: video pairs that share only their static or only their dynamic factor.

For multi-frame RGB models (:class:`FramePairs`), a *static* pair is the same clip in the same
style, the second member with its frames shuffled (independently per pathway for multi-pathway
inputs); a *dynamic* pair is the same clip in the same frame order, in two different styles.
For two-stream models (:class:`TwoStreamPairs`, input ``[rgb_frame, flow_image]``), a static
pair keeps the stylized RGB frame and jitters the second flow image; a dynamic pair keeps the
flow image and shows the RGB frame in two different styles.

Every random choice for a sample comes from ``numpy.random.default_rng([seed, index, factor])``,
where ``index`` is the sample's index in its dataset, so the pairs of a clip never depend on the
batch size, the other clips of the batch, or how the data are sharded over processes.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from stdyn.core.stylize import STYLES, stylize
from stdyn.data.flow import flow_to_image, jitter_flow_image
from stdyn.data.videos import VIDEO_EXTENSIONS, decode_cached, fit_square

FACTORS: tuple[str, ...] = ("static", "dynamic")
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".webp")

Inputs = Tensor | list[Tensor]
Pack = Callable[[Any], Any]
_Shuffled = TypeVar("_Shuffled", Tensor, list[Tensor], tuple[Tensor, ...])


def pair_rng(seed: int, index: int, factor: str) -> np.random.Generator:
    """The random generator of one sample's pair: ``default_rng([seed, index, factor code])``."""
    code = _factor_code(factor)
    for name, value in (("seed", seed), ("index", index)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return np.random.default_rng([int(seed), int(index), code])


def random_permutation(n: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random permutation of ``range(n)`` other than the identity (needs n >= 2)."""
    if n < 2:
        raise ValueError(f"cannot shuffle {n} frame(s): a shuffled order needs at least 2 frames")
    identity = np.arange(n)
    while True:
        order = rng.permutation(n)
        if not np.array_equal(order, identity):
            return order


def shuffle_frames(x: _Shuffled, rng: np.random.Generator) -> _Shuffled:
    """Shuffle the time axis of a clip (C, T, H, W) (dim 1) or of each clip of a batch (B, C, T, H, W) (dim 2).

    Every clip, and every pathway of a list (e.g. SlowFast's ``[slow, fast]``), gets its own
    permutation, never the identity, drawn from ``rng`` in order.
    """
    if isinstance(x, (list, tuple)):
        return type(x)(shuffle_frames(pathway, rng) for pathway in x)
    if not isinstance(x, Tensor) or x.dim() not in (4, 5):
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"expected a clip (C, T, H, W), a batch (B, C, T, H, W) or a list of them, got {shape}")
    if x.dim() == 4:
        return x[:, torch.from_numpy(random_permutation(x.shape[1], rng)).to(x.device)]
    orders = np.stack([random_permutation(x.shape[2], rng) for _ in range(x.shape[0])])
    return _gather_frames(x, torch.from_numpy(orders))


def shuffle_batch_frames(clips: Tensor, generator: torch.Generator) -> Tensor:
    """Each clip of a batch (B, C, T, H, W) with its own random frame order (never the identity)."""
    if not isinstance(clips, Tensor) or clips.dim() != 5:
        shape = tuple(clips.shape) if isinstance(clips, Tensor) else type(clips).__name__
        raise ValueError(f"expected a batch (B, C, T, H, W), got {shape}")
    batch, n_frames = clips.shape[0], clips.shape[2]
    if n_frames < 2:
        raise ValueError(f"cannot shuffle {n_frames} frame(s): a shuffled order needs at least 2 frames")
    orders = torch.rand(batch, n_frames, generator=generator, device=generator.device).argsort(1)
    identity = torch.arange(n_frames, device=orders.device)
    unshuffled = (orders == identity).all(1)
    while unshuffled.any():
        redraw = torch.rand(int(unshuffled.sum()), n_frames, generator=generator, device=generator.device)
        orders[unshuffled] = redraw.argsort(1)
        unshuffled = (orders == identity).all(1)
    return _gather_frames(clips, orders)


def _gather_frames(batch: Tensor, orders: Tensor) -> Tensor:
    index = orders.to(batch.device)[:, None, :, None, None].expand(-1, batch.shape[1], -1, *batch.shape[3:])
    return torch.gather(batch, 2, index)


def _factor_code(factor: str) -> int:
    if factor not in FACTORS:
        raise ValueError(f"unknown factor {factor!r}; valid factors: {FACTORS}")
    return FACTORS.index(factor)


def _draw_styles(rng: np.random.Generator, factor: str, n_styles: int) -> tuple[int, int]:
    """The styles of the two members: equal for static pairs, two different ones for dynamic pairs."""
    first = int(rng.integers(n_styles))
    if factor == "static":
        return first, first
    return first, (first + 1 + int(rng.integers(n_styles - 1))) % n_styles


def _check_indices(indices: Sequence[int], batch: int) -> list[int]:
    indices = [int(i) for i in (indices.tolist() if isinstance(indices, Tensor) else indices)]
    if len(indices) != batch:
        raise ValueError(f"got {len(indices)} indices for a batch of {batch} samples; pass each sample's dataset index")
    return indices


def _render(images: Tensor, styles: list[int], prestylized: bool) -> Tensor:
    """Sample i of ``images`` in style ``styles[i]``: stylized now (B, 3, ...) or picked (B, S, 3, ...)."""
    if prestylized:
        return images[torch.arange(len(styles)), torch.tensor(styles)]
    out = torch.empty_like(images)
    chosen = np.asarray(styles)
    for style in np.unique(chosen):
        rows = torch.from_numpy(np.flatnonzero(chosen == style))
        out[rows] = stylize(images[rows], int(style))
    return out


class FramePairs:
    """Static and dynamic pairs for multi-frame RGB models (action recognition, VIS).

    ``make`` takes a batch of clips (B, 3, T, H, W) in [0, 1], stylized on the fly in the styles of
    :mod:`stdyn.core.stylize`, or a pre-stylized batch (B, S, 3, T, H, W) with one entry per style (see
    :class:`StylizedFolder`).
    """

    inputs_per_sample = 1

    def make(self, clips: Tensor, indices: Sequence[int], factor: str, seed: int,
             pack: Pack | None = None) -> tuple[Inputs, Inputs]:
        """The two members ``(input1, input2)`` of the ``factor`` pair of every clip of the batch.

        Each member is ``pack(stylized_clips)`` (the clips themselves without ``pack``); the
        static member 2 is shuffled after ``pack``, each pathway independently.
        """
        _factor_code(factor)
        prestylized = _check_clip_batch(clips)
        n_styles = clips.shape[1] if prestylized else len(STYLES)
        if factor == "dynamic" and n_styles < 2:
            raise ValueError(f"dynamic pairs need at least 2 styles, the batch has {n_styles}")
        if factor == "static" and clips.shape[-3] < 2:
            raise ValueError(f"static pairs shuffle frames and need T >= 2, got T = {clips.shape[-3]}")
        rngs = [pair_rng(seed, index, factor) for index in _check_indices(indices, clips.shape[0])]
        styles = [_draw_styles(rng, factor, n_styles) for rng in rngs]
        first = _render(clips, [a for a, _ in styles], prestylized)
        pack = pack or (lambda x: x)
        input1 = pack(first)
        if factor == "dynamic":
            return input1, pack(_render(clips, [b for _, b in styles], prestylized))
        return input1, _shuffle_each(input1, rngs)


def _shuffle_each(packed: Inputs, rngs: list[np.random.Generator]) -> Inputs:
    """Shuffle sample i of a packed batch (one tensor or a list of pathways) with ``rngs[i]``."""
    pathways = list(packed) if isinstance(packed, (list, tuple)) else [packed]
    for pathway in pathways:
        if not isinstance(pathway, Tensor) or pathway.dim() != 5 or pathway.shape[0] != len(rngs):
            shape = tuple(pathway.shape) if isinstance(pathway, Tensor) else type(pathway).__name__
            raise ValueError(f"pack must return a batch (B, C, T, H, W) or a list of them, got {shape}")
    per_sample = [shuffle_frames([p[i] for p in pathways], rng) for i, rng in enumerate(rngs)]
    shuffled = [torch.stack([sample[k] for sample in per_sample]) for k in range(len(pathways))]
    return type(packed)(shuffled) if isinstance(packed, (list, tuple)) else shuffled[0]


def _check_clip_batch(clips: Any) -> bool:
    """True for a pre-stylized batch (B, S, 3, T, H, W), False for (B, 3, T, H, W); else raise."""
    if isinstance(clips, Tensor) and clips.dim() == 5 and clips.shape[1] == 3:
        return False
    if isinstance(clips, Tensor) and clips.dim() == 6 and clips.shape[2] == 3:
        return True
    shape = tuple(clips.shape) if isinstance(clips, Tensor) else type(clips).__name__
    raise ValueError(f"expected clips (B, 3, T, H, W) or pre-stylized clips (B, S, 3, T, H, W), got {shape}")


class TwoStreamPairs:
    """Static and dynamic pairs for two-stream models whose input is ``[rgb_frame, flow_image]``.

    Samples are ``(frames, flows)``: frames (B, 3, H, W) in [0, 1] (or pre-stylized
    (B, S, 3, H, W)) and raw flow (B, 2, H, W) in pixels. Flow images are HSV-encoded with
    saturation relative to ``max_magnitude`` (default: each sample's own largest magnitude).
    """

    inputs_per_sample = 2

    def __init__(self, max_magnitude: float | None = None):
        self.max_magnitude = max_magnitude

    def make(self, samples: Sequence[Tensor], indices: Sequence[int], factor: str, seed: int,
             pack: Pack | None = None) -> tuple[Any, Any]:
        """The two members of the ``factor`` pair of every sample: ``pack([rgb, flow_image])`` each.

        Without ``pack`` a member is the list ``[rgb (B, 3, H, W), flow_image (B, 3, H, W)]``.
        """
        _factor_code(factor)
        frames, flows, prestylized = _check_two_stream(samples)
        n_styles = frames.shape[1] if prestylized else len(STYLES)
        if factor == "dynamic" and n_styles < 2:
            raise ValueError(f"dynamic pairs need at least 2 styles, the batch has {n_styles}")
        rngs = [pair_rng(seed, index, factor) for index in _check_indices(indices, frames.shape[0])]
        styles = [_draw_styles(rng, factor, n_styles) for rng in rngs]
        as_clips = frames.unsqueeze(-3)  # one-frame clips for the stylizer
        rgb1 = _render(as_clips, [a for a, _ in styles], prestylized).squeeze(-3)
        flow_image = torch.stack([flow_to_image(flow, self.max_magnitude) for flow in flows])
        if factor == "static":
            member2 = [rgb1, torch.stack([jitter_flow_image(img, rng) for img, rng in zip(flow_image, rngs)])]
        else:
            member2 = [_render(as_clips, [b for _, b in styles], prestylized).squeeze(-3), flow_image]
        pack = pack or (lambda x: x)
        return pack([rgb1, flow_image]), pack(member2)


def _check_two_stream(samples: Any) -> tuple[Tensor, Tensor, bool]:
    layout = "(frames (B, 3, H, W) or pre-stylized (B, S, 3, H, W), flows (B, 2, H, W))"
    if not isinstance(samples, (list, tuple)) or len(samples) < 2:
        raise ValueError(f"expected samples {layout}, got {type(samples).__name__}")
    frames, flows = samples[0], samples[1]
    if not isinstance(frames, Tensor) or not isinstance(flows, Tensor):
        raise ValueError(f"expected samples {layout} as tensors")
    if frames.dim() == 4 and frames.shape[1] == 3:
        prestylized = False
    elif frames.dim() == 5 and frames.shape[2] == 3:
        prestylized = True
    else:
        raise ValueError(f"expected samples {layout}, got frames {tuple(frames.shape)}")
    if flows.dim() != 4 or flows.shape[1] != 2 or flows.shape[0] != frames.shape[0] \
            or flows.shape[-2:] != frames.shape[-2:]:
        raise ValueError(f"expected samples {layout}, got frames {tuple(frames.shape)} and flows {tuple(flows.shape)}")
    return frames, flows, prestylized


class StylizedFolder(Dataset):
    """Your own stylized videos: ``root/style_1 .. style_S/<video>`` with the same videos in every style.

    ``<video>`` is a folder of frame images (png/jpg/...) or a video file. Items are tensors
    (S, 3, frames, size, size) in [0, 1]: frames sampled uniformly over each video, resized so the
    shorter side is ``size`` and centre-cropped. Feed batches of them to :class:`FramePairs`.
    """

    def __init__(self, root: str | Path, *, frames: int = 16, size: int = 64):
        if frames < 1 or size < 1:
            raise ValueError(f"frames and size must be >= 1, got frames={frames}, size={size}")
        self.root, self.frames, self.size = Path(root), frames, size
        layout = "root/style_1 .. style_S/<video>/ (S >= 2; <video> a folder of frame images or a video file)"
        if not self.root.is_dir():
            raise FileNotFoundError(f"stylized folder {str(self.root)!r} does not exist; expected {layout}")
        numbered = {int(m.group(1)): p for p in self.root.iterdir()
                    if p.is_dir() and (m := re.fullmatch(r"style_(\d+)", p.name))}
        if len(numbered) < 2 or sorted(numbered) != list(range(1, len(numbered) + 1)):
            found = sorted(p.name for p in self.root.iterdir())
            raise ValueError(f"{str(self.root)!r} does not follow the layout {layout}; found {found}")
        self.style_dirs = [numbered[k] for k in range(1, len(numbered) + 1)]
        per_style = [_videos_in(style_dir) for style_dir in self.style_dirs]
        names = set(per_style[0])
        for style_dir, videos in zip(self.style_dirs[1:], per_style[1:]):
            if set(videos) != names:
                missing, extra = sorted(names - set(videos)), sorted(set(videos) - names)
                raise ValueError(
                    f"styles disagree on their videos: {style_dir.name} lacks {missing} and has extra {extra} "
                    f"compared with {self.style_dirs[0].name}; every style needs the same videos"
                )
        if not names:
            raise ValueError(f"no videos in {str(self.style_dirs[0])!r}; expected {layout}")
        self.names = sorted(names)
        self._sources = [[videos[name] for videos in per_style] for name in self.names]

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> Tensor:
        return torch.stack([self._load(source) for source in self._sources[index]])

    def _load(self, source: Path) -> Tensor:
        if source.is_dir():
            images = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            if not images:
                raise ValueError(f"no frame images ({', '.join(IMAGE_EXTENSIONS)}) in {str(source)!r}")
            chosen = [images[i] for i in _uniform_indices(len(images), self.frames)]
            clip = np.stack([fit_square(np.asarray(Image.open(p).convert("RGB")), self.size) for p in chosen])
            clip = torch.from_numpy(clip).permute(3, 0, 1, 2)
        else:
            decoded = decode_cached(source, size=self.size)
            clip = decoded[:, torch.from_numpy(_uniform_indices(decoded.shape[1], self.frames))]
        return clip.to(torch.float32).div_(255.0)


def _uniform_indices(n: int, frames: int) -> np.ndarray:
    return np.linspace(0, n - 1, frames).round().astype(np.int64)


def _videos_in(style_dir: Path) -> dict[str, Path]:
    """The videos of one style folder by name: sub-folders by their name, video files by their stem."""
    videos: dict[str, Path] = {}
    for path in sorted(style_dir.iterdir()):
        if path.is_dir():
            key = path.name
        elif path.suffix.lower() in VIDEO_EXTENSIONS:
            key = path.stem
        else:
            continue
        if key in videos:
            raise ValueError(
                f"{str(style_dir)!r} holds both {videos[key].name!r} and {path.name!r}; keep one per video"
            )
        videos[key] = path
    return videos
