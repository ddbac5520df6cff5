"""What a task is: the one object that training, the zoo, measurement and the experiments ask.

A :class:`Task` says what an item of its datasets is, how a batch becomes the model's inputs,
the loss, the per-item score that training reports (``metric``), the static/dynamic pair builder
and the layers measured by default. Action recognition (:mod:`stdyn.tasks.action`) and video
object segmentation (:mod:`stdyn.tasks.vos`) are tasks; :func:`stdyn.tasks.get` and
:func:`stdyn.tasks.of_world` find them.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset

if TYPE_CHECKING:
    from stdyn.training.profiles import Profile

Batch = tuple[Tensor, ...]  # one batch as the data loader gives it: the inputs, then the target


class Task:
    """One task. Subclasses fill in every method that raises NotImplementedError."""

    name: str = ""
    metric: str = ""  # the per-item score's column suffix in training metrics (train_{metric}, val_{metric})
    metric_label: str = ""  # how tables and figures name it
    pairs: str = ""  # the stdyn.core.probe.measure pair builder

    # ------------------------------------------------------------------ data
    def worlds(self) -> list[str]:
        """The synthetic worlds of this task."""
        raise NotImplementedError

    def owns_world(self, world: str) -> bool:
        return world in self.worlds()

    def make_dataset(self, world: str, split: str, *, n: int, frames: int | None, size: int, seed: int,
                     progress: bool, **kwargs: Any) -> Dataset:
        """Render (or read from the cache) ``n`` items of ``world``'s ``split``."""
        raise NotImplementedError

    def data_sizes(self, profile: Profile, seed: int) -> dict[str, Any]:
        """The dataset sizes a zoo entry of this task trains with at ``profile``."""
        raise NotImplementedError

    def measure_count(self, profile: Profile) -> int:
        """How many held-out clips (of each world) chapters measure on at ``profile``."""
        return profile.n_measure

    def first_clips(self, dataset: Dataset, profile: Profile) -> Dataset:
        """The held-out clips chapters measure on: the first :meth:`measure_count`."""
        return Subset(dataset, range(min(self.measure_count(profile), len(dataset))))  # type: ignore[arg-type]

    def code_modules(self, world: str) -> list[ModuleType]:
        """The modules whose source makes ``world``'s data (part of zoo cache keys)."""
        raise NotImplementedError

    def output_names(self, dataset: Dataset) -> list[str]:
        """What the model's outputs stand for: class names, or the segmented masks."""
        raise NotImplementedError

    def examples(self, dataset: Dataset, per_clip: int | None = None) -> Dataset:
        """The dataset that training and evaluation iterate (e.g. frames of clips; with ``per_clip``,
        that many of each clip, where examples are parts of clips)."""
        return dataset

    def example(self, item: Any, index: int) -> Batch:
        """One example as a tuple of tensors (inputs..., target); a clear error when it is not one."""
        raise NotImplementedError

    # ------------------------------------------------------------------ models
    def new_model(self, name: str, outputs: int, seed: int, kwargs: dict[str, Any]) -> nn.Module:
        from stdyn import models

        return models.create(name, outputs, seed=seed, **kwargs)

    def model_kwargs(self, profile: Profile, model: str) -> dict[str, Any]:
        """The keyword arguments ``profile`` gives ``model`` for this task."""
        return profile.kwargs_for(model)

    def train_settings(self, profile: Profile, model: str) -> dict[str, Any]:
        """TrainConfig fields for ``model`` at ``profile`` (before a caller's overrides)."""
        raise NotImplementedError

    def default_layers(self, model: nn.Module) -> list[str]:
        from stdyn.core.probe import default_layers

        return default_layers(model)

    # ------------------------------------------------------------------ one training step
    def inputs(self, model: nn.Module, batch: Batch) -> tuple[Any, ...]:
        """The positional arguments of ``model`` for ``batch``."""
        raise NotImplementedError

    def target(self, batch: Batch) -> Tensor:
        return batch[-1]

    def loss(self, model: nn.Module, outputs: Tensor, batch: Batch, label_smoothing: float = 0.0) -> Tensor:
        raise NotImplementedError

    def scores(self, outputs: Tensor, batch: Batch) -> Tensor:
        """One score per example (B,) whose mean is the metric: 1/0 for correct, an IoU, ..."""
        raise NotImplementedError

    def recolour(self, batch: Batch, index: Tensor, jitter: Callable[[Tensor, Tensor], Tensor]) -> Batch:
        """``batch`` with its RGB input recoloured by ``jitter(clips (B, 3, T, H, W), index)``."""
        raise NotImplementedError

    def shuffle_frames(self, batch: Batch, index: Tensor, shuffle: Callable[[Tensor, Tensor], Tensor]) -> Batch:
        raise ValueError(f"the {self.name} task has no frame-shuffled training; set shuffle_frames=False")

    # ------------------------------------------------------------------ measurement
    def measure_items(self, dataset: Dataset) -> Dataset:
        """What :func:`stdyn.core.probe.measure` iterates over for ``dataset``."""
        return dataset

    def pair_builder(self, dataset: Dataset) -> Any:
        """The pair builder (or its name) to measure on ``dataset``."""
        return self.pairs

    def __repr__(self) -> str:
        return f"<task {self.name}: metric {self.metric}, pairs {self.pairs!r}>"


def to_device(batch: Sequence[Tensor], device: torch.device) -> Batch:
    return tuple(x.to(device, non_blocking=True) for x in batch)
