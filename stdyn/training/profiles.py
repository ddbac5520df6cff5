"""Run profiles: one set of sizes for seconds-long test runs, laptop CPUs and GPUs.

Every chapter reads a ``profile`` parameter and takes its clip shape, dataset sizes, training
schedule and number of seeds from here, so the three scales stay consistent across the book.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class SegmentationScale:
    """The video object segmentation sizes of a profile: the worlds' clips, the two-stream models'
    width and their SGD + poly training (frames of clips are the training examples)."""

    n_train: int  # training clips per world (a "davis+ytvos" entry trains on both)
    n_val: int  # held-out clips per world
    n_measure: int  # held-out clips measured (one frame each)
    size: int
    width: int  # the two-stream models' base width (stages: w, w, 2w, 4w, 8w)
    epochs: int
    batch_size: int  # frames
    lr: float
    weight_decay: float = 1e-4
    # Recolouring half of the training frames (as the action models train) left the two-stream
    # models no better than either stream alone on held-out davis at quick (0.59 vs 0.57 and 0.58);
    # without it they beat both (0.66 vs 0.59 and 0.58) and still keep their mIoU on restyled frames.
    appearance: float = 0.0
    frames_per_clip: int | None = None  # training frames of each clip (evenly spaced); None: every frame
    # Held-out mIoU after every epoch, or after the last only (a fifth of a quick model's training time).
    validate_every_epoch: bool = True


@dataclass(frozen=True)
class InstanceScale:
    """The video instance segmentation sizes of a profile: the ``ytvis``/``ovis`` clips, the
    VisTR-like models (backbone width, transformer width, layers and instance queries) and their
    AdamW training with appearance randomisation (clips are the training examples)."""

    n_train: int  # training clips per world
    n_val: int  # held-out clips per world (mask AP)
    n_measure: int  # stylized davis clips measured
    frames: int
    size: int
    width: int  # the backbone's base width (stages: w, 2w, 4w, 8w)
    dim: int  # the transformer's width
    heads: int
    encoder_layers: int
    decoder_layers: int
    queries: int  # instance queries (each one predicts a track over all frames)
    epochs: int
    batch_size: int  # clips
    lr: float
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    grad_clip: float | None = 1.0
    # Every training clip recoloured (not half, as the action models): the measurement styles
    # otherwise took away two thirds of a quick model's mask AP.
    appearance: float = 1.0
    validate_every_epoch: bool = True


@dataclass(frozen=True)
class Profile:
    """Sizes and training settings shared by every chapter at one scale."""

    name: str
    frames: int  # clip length T
    size: int  # clip height = width
    n_train: int  # training clips per world
    n_val: int  # held-out clips per world (accuracy)
    n_measure: int  # held-out clips used for static/dynamic measurement (<= n_val)
    epochs: int
    batch_size: int
    lr: float
    optimizer: str  # "sgd" | "adamw"
    weight_decay: float
    warmup_epochs: float
    measure_batch_size: int
    seeds: int  # how many training seeds a chapter averages over
    device: str
    amp: bool = False  # bf16 autocast (CUDA only)
    # Probability that a training clip's appearance is randomised again (stdyn.training.augment:
    # recolouring, lighting, grain) on top of the look its world drew for it. Half the clips of
    # every epoch: at quick, models reach the same top-1 and keep it on the measurement styles in
    # 6 epochs as with every clip recoloured in 8.
    appearance: float = 0.5
    loader_workers: int = 0  # DataLoader processes feeding the accelerator
    # Per model name, keyword arguments for stdyn.models.create (widths, position-embedding grids).
    model_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Per model name, TrainConfig fields that replace the profile's (e.g. more epochs for the
    # transformers, which learn more slowly from little data).
    train_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    vos: SegmentationScale = field(default_factory=lambda: _VOS["smoke"])
    vis: InstanceScale = field(default_factory=lambda: _VIS["smoke"])

    @property
    def clip_shape(self) -> tuple[int, int, int, int]:
        """The (3, T, H, W) shape of one clip."""
        return (3, self.frames, self.size, self.size)

    def kwargs_for(self, model: str) -> dict[str, Any]:
        """The keyword arguments this profile gives ``stdyn.models.create(model, ...)``."""
        return dict(self.model_kwargs.get(model, {}))

    def train_overrides_for(self, model: str) -> dict[str, Any]:
        """The TrainConfig fields this profile sets for ``model`` on top of its own settings."""
        return dict(self.train_overrides.get(model, {}))

    def replace(self, **changes: Any) -> Profile:
        """A copy with some fields changed (e.g. ``get("quick").replace(epochs=2)``)."""
        unknown = set(changes) - set(asdict(self))
        if unknown:
            raise ValueError(f"Profile has no field(s) {sorted(unknown)}; fields: {sorted(asdict(self))}")
        return replace(self, **changes)


def _token_grids(frames: int, size: int) -> dict[str, dict[str, Any]]:
    """Transformers size their position embeddings to the clips they will see."""
    return {name: {"frames": frames, "size": size} for name in ("timesformer", "mvit")}


_VOS: dict[str, SegmentationScale] = {
    "smoke": SegmentationScale(n_train=16, n_val=8, n_measure=8, size=16, width=4, epochs=1, batch_size=16, lr=0.05),
    # 150 clips of each training world (1050 frames), every frame, 5 epochs: 15-50 s per model on one
    # core, so that the book's 13 segmentation models fit its time. The two-stream model (U+G) then
    # beats both single streams on held-out davis (0.65 vs 0.59 and 0.56) and appearance only on
    # moca (0.37 vs 0.11); 200 clips gave 0.66 vs 0.59 and 0.58, 0.40 vs 0.13, for a third more time.
    "quick": SegmentationScale(n_train=150, n_val=100, n_measure=100, size=32, width=8, epochs=5, batch_size=16,
                               lr=0.05, validate_every_epoch=False),
    "full": SegmentationScale(n_train=3000, n_val=500, n_measure=500, size=64, width=16, epochs=20, batch_size=64,
                              lr=0.05),
}

_VIS: dict[str, InstanceScale] = {
    "smoke": InstanceScale(n_train=16, n_val=8, n_measure=8, frames=8, size=16, width=4, dim=16, heads=2,
                           encoder_layers=1, decoder_layers=1, queries=6, epochs=1, batch_size=8, lr=1e-3),
    # 600 clips of ytvis, 12 epochs: about 3 minutes for R50 on one core. With every clip
    # recoloured the models keep about 0.7 of their mask AP on the measurement styles, with half of
    # them about 0.35; 480 clips gave half the mask AP of 600.
    "quick": InstanceScale(n_train=600, n_val=100, n_measure=100, frames=8, size=32, width=8, dim=32, heads=2,
                           encoder_layers=2, decoder_layers=2, queries=6, epochs=12, batch_size=8, lr=3e-3,
                           validate_every_epoch=False),
    # VisTR's 6 + 6 transformer layers.
    "full": InstanceScale(n_train=6000, n_val=500, n_measure=500, frames=8, size=64, width=16, dim=128, heads=8,
                          encoder_layers=6, decoder_layers=6, queries=10, epochs=30, batch_size=16, lr=1e-4),
}

_PROFILES: dict[str, Profile] = {
    # A chapter in seconds: tiny clips and datasets, two epochs. Used by the tests.
    "smoke": Profile(
        name="smoke",
        frames=8,
        size=16,
        n_train=96,
        n_val=48,
        n_measure=32,
        epochs=2,
        batch_size=16,
        lr=3e-3,
        optimizer="adamw",
        weight_decay=0.05,
        warmup_epochs=0.5,
        measure_batch_size=32,
        seeds=1,
        device="cpu",
        model_kwargs=_token_grids(frames=8, size=16),
        vos=_VOS["smoke"],
        vis=_VIS["smoke"],
    ),
    # The default book build on a 2-core CPU. The worlds randomise every clip's look, so a model
    # must learn motion in many appearances. 4800 clips in batches of 32 for 6 epochs take I3D,
    # SlowOnly and SlowFast (width 12) to 0.94-0.97 on ssv2; width 8 left SlowOnly at 0.59 and
    # SlowFast at 0.83; 2400 clips for 12 epochs gave I3D 0.72. Clips have 8 frames (16 doubled
    # the cost and did not help); C2D, SlowOnly, SlowFast's slow pathway and the transformers see
    # every second frame. The transformers are narrow and shallow and train longer.
    "quick": Profile(
        name="quick",
        frames=8,
        size=32,
        n_train=4800,
        n_val=400,
        n_measure=300,
        epochs=6,
        batch_size=32,
        lr=3e-3,
        optimizer="adamw",
        weight_decay=0.05,
        warmup_epochs=1.0,
        measure_batch_size=64,
        seeds=1,
        device="cpu",
        model_kwargs={
            "c2d": {"width": 12, "frame_stride": 2},
            "i3d": {"width": 12},
            "x3d": {"width": 12},
            "slowonly": {"width": 12, "frame_stride": 2},
            "fastonly": {"width": 12},
            "slowfast": {"width": 12, "alpha": 2},
            "timesformer": {"frames": 8, "size": 32, "dim": 32, "depth": 2, "heads": 2, "frame_stride": 2},
            "mvit": {"frames": 8, "size": 32, "dim": 16, "stage_depths": (1, 1, 1), "frame_stride": 2},
        },
        # The transformers learn more slowly than the CNNs (12 epochs: 0.69 on kinetics for both)
        # and sit at chance for several epochs on diving48 before they learn.
        train_overrides={name: {"epochs": 16, "lr": 2e-3} for name in ("timesformer", "mvit")},
        vos=_VOS["quick"],
        vis=_VIS["quick"],
    ),
    # GPU scale: at 16x64x64 with bf16 the models train at 1.5k-10k clips/s on one H200, and the
    # data loader feeds about 1.5k clips/s per 3 workers, so 20k clips for 30 epochs take a few
    # minutes per model.
    "full": Profile(
        name="full",
        frames=16,
        size=64,
        n_train=20000,
        n_val=2000,
        n_measure=1000,
        epochs=30,
        batch_size=64,
        lr=1e-3,
        optimizer="adamw",
        weight_decay=0.05,
        warmup_epochs=3.0,
        measure_batch_size=256,
        seeds=3,
        device="cuda",
        amp=True,
        loader_workers=6,
        model_kwargs={
            **{name: {"width": 32} for name in ("c2d", "i3d", "x3d", "slowonly", "fastonly", "slowfast")},
            "timesformer": {"dim": 128, "frames": 16, "size": 64},
            "mvit": {"dim": 64, "frames": 16, "size": 64},
        },
        vos=_VOS["full"],
        vis=_VIS["full"],
    ),
}

NAMES: tuple[str, ...] = tuple(_PROFILES)


def get(name: str | Profile) -> Profile:
    """The profile called ``name`` ("smoke", "quick" or "full"); a Profile is returned as is."""
    if isinstance(name, Profile):
        return name
    try:
        return _PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(NAMES)}") from None
