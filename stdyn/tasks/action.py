"""Action recognition: an item is ``(clip (3, T, H, W) in [0, 1], label)``; cross-entropy; top-1."""
from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from stdyn.tasks.base import Batch, Task

if TYPE_CHECKING:
    from stdyn.training.profiles import Profile


class ActionRecognition(Task):
    """Classify clips; pairs compare shuffled frames (static) with restyled clips (dynamic)."""

    name = "action"
    metric = "acc"
    metric_label = "top-1"
    pairs = "frames"

    def worlds(self) -> list[str]:
        from stdyn.data import worlds

        return worlds.available()

    def make_dataset(self, world: str, split: str, *, n: int, frames: int | None, size: int, seed: int,
                     progress: bool, **kwargs: Any) -> Dataset:
        from stdyn.data import worlds

        return worlds.make(world, split, n=n, frames=frames, size=size, seed=seed, progress=progress, **kwargs)

    def data_sizes(self, profile: Profile, seed: int) -> dict[str, Any]:
        return {"n_train": profile.n_train, "n_val": profile.n_val, "frames": profile.frames, "size": profile.size,
                "seed": seed}

    def code_modules(self, world: str) -> list[ModuleType]:
        from stdyn.data import worlds

        return [worlds, *worlds.code_modules(world)]

    def output_names(self, dataset: Dataset) -> list[str]:
        if not hasattr(dataset, "classes"):
            raise TypeError(f"the training set {type(dataset).__name__} has no 'classes' attribute "
                            "(a list of class names)")
        return [str(c) for c in dataset.classes]

    def example(self, item: Any, index: int) -> Batch:
        clip, label = item[:2]
        if not isinstance(clip, Tensor) or clip.dim() != 4 or clip.shape[0] != 3:
            shape = tuple(clip.shape) if isinstance(clip, Tensor) else type(clip).__name__
            raise ValueError(f"dataset item {index}: expected a clip tensor (3, T, H, W), got {shape}")
        return clip, torch.as_tensor(label)

    def train_settings(self, profile: Profile, model: str) -> dict[str, Any]:
        return {"epochs": profile.epochs, "batch_size": profile.batch_size, "optimizer": profile.optimizer,
                "lr": profile.lr, "weight_decay": profile.weight_decay, "warmup_epochs": profile.warmup_epochs,
                "appearance": profile.appearance, **profile.train_overrides_for(model)}

    def inputs(self, model: nn.Module, batch: Batch) -> tuple[Any, ...]:
        from stdyn.models import prepare_input

        return (prepare_input(model, batch[0]),)

    def loss(self, model: nn.Module, outputs: Tensor, batch: Batch, label_smoothing: float = 0.0) -> Tensor:
        return F.cross_entropy(outputs.float(), batch[1], label_smoothing=label_smoothing)

    def scores(self, outputs: Tensor, batch: Batch) -> Tensor:
        return (outputs.argmax(1) == batch[1]).double()

    def recolour(self, batch: Batch, index: Tensor, jitter: Callable[[Tensor, Tensor], Tensor]) -> Batch:
        return (jitter(batch[0], index), *batch[1:])

    def shuffle_frames(self, batch: Batch, index: Tensor, shuffle: Callable[[Tensor, Tensor], Tensor]) -> Batch:
        return (shuffle(batch[0], index), *batch[1:])


ACTION = ActionRecognition()
