"""What every world shares: the dataset container, the registry, seeding, labels and chunking."""
from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from . import render

SPLITS: tuple[str, ...] = ("train", "val")


@dataclass
class Generated:
    """A generator's output: uint8 clips (N, 3, T, S, S), labels (N,) and per-clip latents."""

    clips: Tensor
    labels: np.ndarray
    meta: dict[str, np.ndarray]


GENERATOR_ARGS = ("rng", "split", "n", "frames", "size", "long_tail", "progress")


@dataclass(frozen=True)
class WorldSpec:
    """A registered world: its classes and its generator.

    ``generate(rng, split, n, frames, size, long_tail, progress, **options)`` returns a
    :class:`Generated`; its extra keyword arguments with defaults are the world's options.
    """

    name: str
    classes: tuple[str, ...]
    generate: Callable[..., Generated]
    module: ModuleType  # hashed into cache keys, so editing the generator invalidates its entries
    # annotate(meta, indices, frames, size) -> (object masks (B, T, S, S), exact flow (B, 2, T-1, S, S))
    annotate: Callable[..., tuple[Tensor, Tensor]] | None = None

    @property
    def options(self) -> dict[str, Any]:
        """The world's own keyword options and their defaults."""
        parameters = inspect.signature(self.generate).parameters.values()
        return {p.name: p.default for p in parameters if p.name not in GENERATOR_ARGS}

    @property
    def description(self) -> str:
        return inspect.cleandoc(self.generate.__doc__ or "")


REGISTRY: dict[str, WorldSpec] = {}


def register(spec: WorldSpec) -> WorldSpec:
    """Add a world to the registry (a name may only be reused by the module that defined it)."""
    known = REGISTRY.get(spec.name)
    if known is not None and known.module.__name__ != spec.module.__name__:
        raise ValueError(f"a world called {spec.name!r} is already registered")
    REGISTRY[spec.name] = spec
    return spec


class World(Dataset):
    """A rendered world: a Dataset of ``(clip, label)`` with clips float32 (3, T, S, S) in [0, 1].

    Clips are held as uint8 and converted on access. ``meta`` has one row per clip with the
    label, class name and every latent factor that produced the clip.
    """

    def __init__(self, name: str, split: str, config: dict[str, Any], classes: list[str],
                 data: Tensor, labels: Tensor, meta: pd.DataFrame, description: str = "",
                 cache_path: Path | None = None, from_cache: bool = False) -> None:
        self.name, self.split, self.config = name, split, config
        self.cache_path = cache_path  # the cache entry it was read from or written to
        self.from_cache = from_cache  # True when read from the cache rather than rendered
        self.classes = classes
        self.data = data
        self.labels = labels
        self.meta = meta
        self.description = description

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.data[index].float().div_(255.0), int(self.labels[index])

    def clips(self, index: slice | Tensor | list[int] = slice(None)) -> Tensor:
        """A batch (B, 3, T, S, S) of float clips in [0, 1] (all clips by default)."""
        return self.data[index].float().div_(255.0)

    def annotations(self, indices: Sequence[int] | np.ndarray) -> tuple[Tensor, Tensor]:
        """The moving object's coverage (B, T, S, S) in [0, 1] and its exact forward optical flow
        (B, 2, T-1, S, S) in pixels on the pixels it covers, for the clips ``indices``, drawn again
        from their latents (worlds whose generator can annotate its clips only)."""
        spec = REGISTRY.get(self.name)
        if spec is None or spec.annotate is None:
            annotated = [name for name, s in REGISTRY.items() if s.annotate is not None]
            raise ValueError(f"world {self.name!r} has no object masks or exact flow; worlds that do: "
                             f"{', '.join(annotated)}")
        meta = {column: self.meta[column].to_numpy() for column in self.meta.columns}
        _, _, frames, size, _ = self.data.shape
        with single_thread():
            return spec.annotate(meta, np.asarray(indices), frames, size)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def class_counts(self) -> np.ndarray:
        """Number of clips of each class in this split."""
        return np.bincount(self.labels.numpy(), minlength=len(self.classes))

    def __repr__(self) -> str:
        _, _, frames, size, _ = self.data.shape
        return (f"World({self.name!r}, split={self.split!r}, n={len(self)}, frames={frames}, "
                f"size={size}, classes={len(self.classes)})")


def split_rng(name: str, split: str, seed: int) -> np.random.Generator:
    """The random stream of one (world, split, seed); splits and worlds never share a stream."""
    name_code = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), name_code]))


def class_counts(n: int, num_classes: int, long_tail: float | None) -> np.ndarray:
    """Clips per class: balanced, or Zipf-like ``(rank + 1) ** -long_tail`` with class 0 the most
    frequent. Counts are exact (largest remainder), so they always sum to ``n``."""
    ranks = np.arange(1, num_classes + 1, dtype=np.float64)
    weights = np.ones(num_classes) if long_tail is None else ranks ** -float(long_tail)
    exact = n * weights / weights.sum()
    counts = np.floor(exact).astype(np.int64)
    leftover = n - counts.sum()
    counts[np.argsort(-(exact - counts), kind="stable")[:leftover]] += 1
    return counts


def sample_labels(rng: np.random.Generator, n: int, num_classes: int, long_tail: float | None) -> np.ndarray:
    """Labels with :func:`class_counts` per class, in random order."""
    labels = np.repeat(np.arange(num_classes), class_counts(n, num_classes, long_tail))
    return rng.permutation(labels)


def chunk_size(frames: int, size: int) -> int:
    """Clips rendered at once. Small buffers (about 128K pixels) stay in the CPU cache, which
    makes rendering several times faster than whole-batch buffers. Depends only on the clip
    shape, so the noise stream, and hence every clip, is independent of the machine and of n."""
    return max(1, 2**17 // (frames * size * size))


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch ops on one thread inside the block: rendering works on small cache-sized
    buffers, where intra-op threads only add synchronisation (and stall on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def render_chunks(n: int, frames: int, size: int, rng: np.random.Generator,
                  draw: Callable[[np.ndarray], Tensor], noise: np.ndarray, progress: bool, desc: str) -> Tensor:
    """Render ``n`` clips chunk by chunk: ``draw(indices)`` returns float clips (B, 3, T, S, S)
    without noise; camera noise of standard deviation ``noise[i]`` for clip ``i`` (independent
    across pixels and frames, so symmetric in time) is added from a per-chunk seeded stream and
    the result is stored as uint8 (N, 3, T, S, S)."""
    step = chunk_size(frames, size)
    starts = range(0, n, step)
    noise_seeds = rng.integers(0, 2**62, size=len(starts))
    out = torch.empty((n, 3, frames, size, size), dtype=torch.uint8)
    with single_thread(), tqdm(total=n, desc=desc, unit="clip", disable=not progress) as bar:
        for start, noise_seed in zip(starts, noise_seeds):
            indices = np.arange(start, min(start + step, n))
            generator = torch.Generator().manual_seed(int(noise_seed))
            sigma = torch.as_tensor(noise[indices], dtype=torch.float32).view(-1, 1, 1, 1, 1)
            out[start:start + len(indices)] = render.to_uint8(draw(indices), sigma, generator)
            bar.update(len(indices))
    return out


def as_tensor(values: np.ndarray, indices: np.ndarray) -> Tensor:
    """Rows ``indices`` of a latent column as a float32 tensor."""
    return torch.as_tensor(values[indices], dtype=torch.float32)


def linear_path(start: np.ndarray, end: np.ndarray, indices: np.ndarray, frames: int) -> Tensor:
    """Per-frame values (B, T) moving linearly from ``start`` to ``end`` over the clip."""
    time = torch.linspace(0.0, 1.0, frames)
    first, last = as_tensor(start, indices), as_tensor(end, indices)
    return first[:, None] + (last - first)[:, None] * time
