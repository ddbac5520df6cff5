"""Video instance segmentation (VIS): a clip in, a set of instance tracks out (class and mask per frame).

The worlds (:mod:`stdyn.data.worlds.vis`, ``ytvis`` and ``ovis``) hold clips with every
instance's visible mask in every frame and its class; the models (:mod:`stdyn.models.vis`, a
VisTR-like CNN + transformer) read the whole clip and predict, per instance query, class logits
and a mask sequence, packed in one tensor (:func:`stdyn.models.vis.unpack_outputs`). Training
matches queries to instances with the Hungarian algorithm (:func:`stdyn.tasks.instances.set_loss`);
the per-clip training score is the matched spatio-temporal mask IoU, the benchmark metric the
video-level mask AP of :func:`stdyn.tasks.instances.video_ap`.

The real datasets annotate every 5th frame: ``annotate_every=5`` (a world keyword of the zoo)
restricts the mask loss to those frames; the clips and the evaluation keep every frame.

Measurement follows the paper, which measures VisTR on stylized DAVIS16: the clips of the
``davis`` VOS world, with the frame pairs of action recognition (shuffled frames vs restyled clips).
"""
from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn
from torch.utils.data import Dataset

from stdyn.tasks.base import Batch, Task

if TYPE_CHECKING:
    from stdyn.data.worlds.vis import VisWorld
    from stdyn.training.profiles import Profile

# The weight of the "no object" class for queries matched to no instance, DETR's 0.1: at 1.0
# (a handful of queries per clip, so nearly balanced classes) the real classes were learnt no
# better than chance at quick (0.34 of matched queries right, against 0.6-0.9 at 0.1); the
# unmatched queries' higher scores are left to the mask-quality scoring of the evaluation.
NO_OBJECT_WEIGHT = 0.1


class VisClips(Dataset):
    """Training examples of a VIS world: ``(clip (3, T, S, S), masks (M, T, S, S), classes (M,),
    annotated (T,))``, where ``annotated`` weighs the frames whose masks the loss reads (every
    ``annotate_every``-th frame, from the first)."""

    def __init__(self, world: VisWorld, annotate_every: int = 1) -> None:
        from stdyn.data.worlds.vis import annotated_frames

        self.world = world
        self.name = world.name
        self.annotate_every = annotate_every
        self.annotated = annotated_frames(world.data.shape[2], annotate_every).float()

    def __len__(self) -> int:
        return len(self.world)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        item = self.world[index]
        return item["clip"], item["masks"], item["classes"], self.annotated

    def __repr__(self) -> str:
        return f"VisClips({self.world!r}, annotate_every={self.annotate_every})"


class ClipsOnly(Dataset):
    """The clip tensors (3, T, H, W) of a dataset whose items are dicts with a ``clip`` (VIS or VOS
    worlds) or tuples that start with one: what frame pairs are built from."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Tensor:
        item = self.dataset[index]
        return item["clip"] if isinstance(item, dict) else item[0]


def split_outputs(outputs: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    """A VIS model's packed outputs as (class logits (B, Q, K+1), mask logits (B, Q, T, H, W)),
    sized by the target masks (B, M, T, H, W)."""
    from stdyn.models.vis import unpack_outputs

    frames, height, width = masks.shape[-3:]
    return unpack_outputs(outputs, frames, height, width)


class VideoInstanceSegmentation(Task):
    """Detect, classify, segment and track every instance of a clip; pairs as for action recognition."""

    name = "vis"
    metric = "miou"
    metric_label = "matched mask IoU"
    pairs = "frames"

    def worlds(self) -> list[str]:
        from stdyn.data.worlds import vis as vis_worlds

        return list(vis_worlds.VIS_SETTINGS)

    def make_dataset(self, world: str, split: str, *, n: int, frames: int | None, size: int, seed: int,
                     progress: bool, annotate_every: int = 1, **kwargs: Any) -> VisClips:
        from stdyn.data.worlds import vis as vis_worlds

        rendered = vis_worlds.make(world, split, n, frames=frames, size=size, seed=seed, progress=progress, **kwargs)
        return VisClips(rendered, annotate_every=annotate_every if split == "train" else 1)

    def data_sizes(self, profile: Profile, seed: int) -> dict[str, Any]:
        scale = profile.vis
        return {"n_train": scale.n_train, "n_val": scale.n_val, "frames": scale.frames, "size": scale.size,
                "seed": seed}

    def code_modules(self, world: str) -> list[ModuleType]:
        from stdyn.data.worlds import appearance, base, render
        from stdyn.data.worlds import vis as vis_worlds
        from stdyn.data.worlds import vos as vos_worlds

        return [vis_worlds, vos_worlds, appearance, base, render]

    def output_names(self, dataset: Dataset) -> list[str]:
        from stdyn.data.worlds.vis import VIS_CLASSES

        return list(VIS_CLASSES)

    def measure_count(self, profile: Profile) -> int:
        return profile.vis.n_measure

    def example(self, item: Any, index: int) -> Batch:
        expected = "(clip (3, T, H, W), masks (M, T, H, W), classes (M,), annotated (T,))"
        if not isinstance(item, (tuple, list)) or len(item) != 4 or not all(isinstance(x, Tensor) for x in item):
            raise ValueError(f"dataset item {index}: expected {expected}; pass a VIS world's clips (VisClips), "
                             f"got {type(item).__name__}")
        clip, masks, classes, annotated = item
        shapes_fit = (clip.dim() == 4 and clip.shape[0] == 3 and masks.dim() == 4 and masks.shape[1:] == clip.shape[1:]
                      and classes.shape == masks.shape[:1] and annotated.shape == clip.shape[1:2])
        if not shapes_fit:
            raise ValueError(f"dataset item {index}: expected {expected}, got " + ", ".join(
                str(tuple(x.shape)) for x in item))
        return clip, masks, classes.long(), annotated.float()

    def model_kwargs(self, profile: Profile, model: str) -> dict[str, Any]:
        scale = profile.vis
        return {"width": scale.width, "dim": scale.dim, "heads": scale.heads, "encoder_layers": scale.encoder_layers,
                "decoder_layers": scale.decoder_layers, "queries": scale.queries, **profile.kwargs_for(model)}

    def train_settings(self, profile: Profile, model: str) -> dict[str, Any]:
        scale = profile.vis
        return {"epochs": scale.epochs, "batch_size": scale.batch_size, "optimizer": "adamw", "lr": scale.lr,
                "weight_decay": scale.weight_decay, "warmup_epochs": scale.warmup_epochs, "schedule": "cosine",
                "appearance": scale.appearance, "grad_clip": scale.grad_clip,
                "validate_every_epoch": scale.validate_every_epoch, **profile.train_overrides_for(model)}

    def inputs(self, model: nn.Module, batch: Batch) -> tuple[Any, ...]:
        return (batch[0],)

    def target(self, batch: Batch) -> Tensor:
        return batch[2]

    def loss(self, model: nn.Module, outputs: Tensor, batch: Batch, label_smoothing: float = 0.0) -> Tensor:
        from stdyn.tasks.instances import set_loss

        class_logits, mask_logits = split_outputs(outputs.float(), batch[1])
        return set_loss(class_logits, mask_logits, batch[2], batch[1], batch[3], no_object_weight=NO_OBJECT_WEIGHT)

    def scores(self, outputs: Tensor, batch: Batch) -> Tensor:
        from stdyn.tasks.instances import matched_iou

        class_logits, mask_logits = split_outputs(outputs.float(), batch[1])
        return matched_iou(class_logits, mask_logits, batch[2], batch[1]).double()

    def recolour(self, batch: Batch, index: Tensor, jitter: Callable[[Tensor, Tensor], Tensor]) -> Batch:
        return (jitter(batch[0], index), *batch[1:])

    def measure_items(self, dataset: Dataset) -> Dataset:
        """The clips alone: frame pairs shuffle or restyle them."""
        return ClipsOnly(dataset)

    def default_layers(self, model: nn.Module) -> list[str]:
        """Every encoder and decoder layer."""
        model = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
        return [stage.name for stage in getattr(model, "stages", [])]


VIS = VideoInstanceSegmentation()

__all__ = ["VIS", "ClipsOnly", "VideoInstanceSegmentation", "VisClips", "split_outputs"]
