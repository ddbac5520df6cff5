"""Video object segmentation (AVOS): an RGB frame and its flow image in, the foreground mask out.

The worlds (:mod:`stdyn.data.worlds.vos`) hold clips; the models (:mod:`stdyn.models.vos`) work
frame by frame, so training and evaluation iterate :class:`VosFrames`: example ``k`` is frame
``t`` of clip ``i`` with the forward flow from ``t`` to ``t + 1`` as an HSV flow image, and that
frame's mask. Worlds may be joined with ``+`` (``"davis+ytvos"``, as the paper trains MATNet).

Flow images of every world share one saturation scale at a given size (the largest of the
worlds' :func:`~stdyn.data.worlds.vos.max_magnitude`), so a model trained on some worlds reads
the flow of another in the same units.
"""
from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from stdyn.tasks.base import Batch, Task

if TYPE_CHECKING:
    from stdyn.data.worlds.vos import VosWorld
    from stdyn.training.profiles import Profile


# The mask loss adds a Dice term to the per-pixel BCE: with BCE alone, small foregrounds let some
# seeds settle on predicting no foreground at all.
DICE_WEIGHT = 1.0


def flow_scale(size: int) -> float:
    """The flow magnitude (pixels per frame) that saturates flow images at ``size``: shared by all worlds."""
    from stdyn.data.worlds import vos as vos_worlds

    return max(vos_worlds.max_magnitude(name, size) for name in vos_worlds.VOS_SETTINGS)


def world_names(world: str) -> list[str]:
    """``"davis+ytvos"`` -> ``["davis", "ytvos"]``, each checked."""
    from stdyn.data.worlds import vos as vos_worlds

    names = world.split("+")
    unknown = [name for name in names if name not in vos_worlds.VOS_SETTINGS]
    if unknown or not world:
        raise ValueError(f"unknown VOS world(s) {unknown or [world]}; available: {', '.join(vos_worlds.VOS_SETTINGS)}"
                         " (join several with '+', e.g. 'davis+ytvos')")
    return names


class VosClips(Dataset):
    """One or more rendered VOS worlds as one dataset of clip items (see ``VosWorld``); with
    ``limit``, the first ``limit`` clips of each."""

    def __init__(self, parts: Sequence[VosWorld], limit: int | None = None) -> None:
        if not parts:
            raise ValueError("VosClips needs at least one world")
        sizes = {part.config["size"] for part in parts}
        if len(sizes) > 1:
            raise ValueError(f"cannot join VOS worlds of different sizes {sorted(sizes)}")
        self.parts = list(parts)
        self.name = "+".join(part.name for part in parts)
        self.size = sizes.pop()
        self._ends = np.cumsum([len(part) if limit is None else min(len(part), limit) for part in parts]).tolist()

    def __len__(self) -> int:
        return self._ends[-1]

    def locate(self, index: int) -> tuple[VosWorld, int]:
        """The world holding clip ``index`` and the clip's index in it."""
        if not 0 <= index < len(self):
            raise IndexError(f"clip {index} out of range for {len(self)} clips")
        part = bisect.bisect_right(self._ends, index)
        return self.parts[part], index - (self._ends[part - 1] if part else 0)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        world, i = self.locate(index)
        return world[i]

    def __repr__(self) -> str:
        return f"VosClips({self.name}, {len(self)} clips of {self.size}x{self.size})"


class VosFrames(Dataset):
    """Frame-level examples of VOS clips: ``(rgb (3, S, S), flow_image (3, S, S), mask (1, S, S))``.

    ``frames`` picks which frames of each clip (indices into its T-1 flow frames; default all), or
    ``per_clip`` that many evenly spaced ones (a clip of 7 flow frames and ``per_clip=3``: 1, 3, 5).
    ``flow="raw"`` gives the flow itself (2, S, S) in place of its image, as the two-stream pairs
    of :func:`stdyn.core.probe.measure` take it. ``exact=True`` gives the exact masks (they differ
    from the training masks in weakly labelled worlds). ``clip_index[k]`` and ``frame_index[k]`` are
    example k's clip and frame.
    """

    def __init__(self, clips: VosClips | VosWorld, frames: Sequence[int] | None = None, *, flow: str = "image",
                 exact: bool = False, per_clip: int | None = None) -> None:
        self.clips = clips if isinstance(clips, VosClips) else VosClips([clips])
        if flow not in ("image", "raw"):
            raise ValueError(f"flow must be 'image' or 'raw', got {flow!r}")
        self.flow, self.exact = flow, exact
        self.scale = flow_scale(self.clips.size)
        index = []
        for c in range(len(self.clips)):
            world, i = self.clips.locate(c)
            steps = world.flow.shape[2]
            if per_clip is not None and per_clip < steps:  # evenly spaced, each at the middle of its share
                chosen = sorted({int((k + 0.5) * steps / per_clip) for k in range(per_clip)})
            else:
                chosen = range(steps) if frames is None else [t for t in frames if 0 <= t < steps]
            index += [(c, t) for t in chosen]
        self._index = index
        self.clip_index = np.array([c for c, _ in index], dtype=np.int64)
        self.frame_index = np.array([t for _, t in index], dtype=np.int64)
        self._images: dict[int, Tensor] = {}

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, k: int) -> tuple[Tensor, Tensor, Tensor]:
        from stdyn.data.flow import flow_to_image

        c, t = self._index[k]
        world, i = self.clips.locate(c)
        rgb = world.data[i, :, t].float().div_(255.0)
        if self.flow == "raw":
            second = world.flow[i, :, t].float()
        else:  # drawn once: training reads every example once per epoch
            second = self._images.get(k)
            if second is None:
                second = self._images[k] = flow_to_image(world.flow[i, :, t].float(), self.scale)
        mask = (world.exact_masks if self.exact else world.masks)[i, t].float()[None]
        return rgb, second, mask


def mask_ious(logits: Tensor, masks: Tensor) -> Tensor:
    """Per-example IoU (B,) of the thresholded logits (> 0) against masks (B, 1, H, W); 1 when both are empty."""
    pred, target = logits.detach() > 0, masks > 0.5
    intersection = (pred & target).flatten(1).sum(1).double()
    union = (pred | target).flatten(1).sum(1).double()
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.ones_like(union))


class VideoObjectSegmentation(Task):
    """Segment the moving foreground; pairs restyle the frame (dynamic) or jitter the flow image
    (static) (:class:`stdyn.core.pairs.TwoStreamPairs`)."""

    name = "vos"
    metric = "miou"
    metric_label = "mIoU"
    pairs = "two_stream"

    def worlds(self) -> list[str]:
        from stdyn.data.worlds import vos as vos_worlds

        return list(vos_worlds.VOS_SETTINGS)

    def owns_world(self, world: str) -> bool:
        return all(name in self.worlds() for name in world.split("+"))

    def make_dataset(self, world: str, split: str, *, n: int, frames: int | None, size: int, seed: int,
                     progress: bool, **kwargs: Any) -> VosClips:
        from stdyn.data.worlds import vos as vos_worlds

        return VosClips([vos_worlds.make(name, split, n, frames=frames, size=size, seed=seed, progress=progress,
                                         **kwargs) for name in world_names(world)])

    def data_sizes(self, profile: Profile, seed: int) -> dict[str, Any]:
        scale = profile.vos
        return {"n_train": scale.n_train, "n_val": scale.n_val, "frames": None, "size": scale.size, "seed": seed}

    def code_modules(self, world: str) -> list[ModuleType]:
        import stdyn.data.flow
        from stdyn.data.worlds import appearance, base, render
        from stdyn.data.worlds import vos as vos_worlds

        return [vos_worlds, appearance, base, render, stdyn.data.flow]

    def output_names(self, dataset: Dataset) -> list[str]:
        return ["foreground"]

    def measure_count(self, profile: Profile) -> int:
        return profile.vos.n_measure

    def first_clips(self, dataset: Dataset, profile: Profile) -> VosClips:
        clips = dataset if isinstance(dataset, VosClips) else VosClips([dataset])
        return VosClips(clips.parts, limit=self.measure_count(profile))

    def examples(self, dataset: Dataset, per_clip: int | None = None) -> Dataset:
        from stdyn.data.worlds.vos import VosWorld

        return VosFrames(dataset, per_clip=per_clip) if isinstance(dataset, (VosClips, VosWorld)) else dataset

    def example(self, item: Any, index: int) -> Batch:
        expected = "(rgb (3, H, W), flow_image (3, H, W), mask (1, H, W))"
        if not isinstance(item, (tuple, list)) or len(item) != 3 or not all(isinstance(x, Tensor) for x in item):
            raise ValueError(f"dataset item {index}: expected {expected}; pass frames of clips (VosFrames), "
                             f"got {type(item).__name__}")
        rgb, flow_image, mask = item
        if rgb.shape[0] != 3 or flow_image.shape != rgb.shape or mask.shape != (1, *rgb.shape[1:]):
            raise ValueError(f"dataset item {index}: expected {expected}, got "
                             f"{tuple(rgb.shape)}, {tuple(flow_image.shape)}, {tuple(mask.shape)}")
        return rgb, flow_image, mask

    def model_kwargs(self, profile: Profile, model: str) -> dict[str, Any]:
        return {"width": profile.vos.width, **profile.kwargs_for(model)}

    def train_settings(self, profile: Profile, model: str) -> dict[str, Any]:
        scale = profile.vos
        return {"epochs": scale.epochs, "batch_size": scale.batch_size, "optimizer": "sgd", "lr": scale.lr,
                "weight_decay": scale.weight_decay, "momentum": 0.9, "warmup_epochs": 0.0, "schedule": "poly",
                "appearance": scale.appearance, "examples_per_clip": scale.frames_per_clip,
                "validate_every_epoch": scale.validate_every_epoch, **profile.train_overrides_for(model)}

    def inputs(self, model: nn.Module, batch: Batch) -> tuple[Any, ...]:
        return batch[0], batch[1]

    def loss(self, model: nn.Module, outputs: Tensor, batch: Batch, label_smoothing: float = 0.0) -> Tensor:
        from stdyn.models.vos import vos_loss

        boundary = getattr(_unwrap(model), "last_boundary_logits", None)
        return vos_loss(outputs.float(), batch[2], boundary, dice_weight=DICE_WEIGHT)

    def scores(self, outputs: Tensor, batch: Batch) -> Tensor:
        return mask_ious(outputs[:, :1], batch[2])

    def recolour(self, batch: Batch, index: Tensor, jitter: Callable[[Tensor, Tensor], Tensor]) -> Batch:
        return (jitter(batch[0].unsqueeze(2), index).squeeze(2), *batch[1:])

    def measure_items(self, dataset: Dataset) -> Dataset:
        """One frame per clip (the middle one), with its raw flow: pairs then vary per clip, and the
        bootstrap over items is a bootstrap over clips."""
        clips = dataset if isinstance(dataset, VosClips) else VosClips([dataset])
        steps = clips.parts[0].flow.shape[2]
        return VosFrames(clips, [steps // 2], flow="raw")

    def pair_builder(self, dataset: Dataset) -> Any:
        from stdyn.core.pairs import TwoStreamPairs

        size = dataset.clips.size if isinstance(dataset, VosFrames) else dataset.config["size"]
        return TwoStreamPairs(max_magnitude=flow_scale(size))

    def default_layers(self, model: nn.Module) -> list[str]:
        """The streams after their cross connections and every fusion layer."""
        stages = getattr(_unwrap(model), "stages", [])
        return [stage.name for stage in stages]


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


VOS = VideoObjectSegmentation()
