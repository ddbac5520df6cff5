"""Training and evaluation of video models for any task: seeded, resumable, and DDP-aware.

``fit`` trains a model on a dataset of its task's items (:mod:`stdyn.tasks`: ``(clip, label)`` for
action recognition, frames of clips for video object segmentation) with a linear warm-up followed
by cosine decay or the poly schedule (stepped per iteration) and an optional second phase at a low
constant learning rate.
Each epoch writes the model weights to ``run_dir/epoch_{k:03d}.pt`` (``epoch_000`` holds the
initial weights) and the training state (optimizer, step, random states, callback states) to
``run_dir/state_{k:03d}.pt``, of which only the latest is kept. Calling ``fit`` again on the same
``run_dir`` resumes from the last intact pair and reproduces the uninterrupted run exactly.

Every random choice is derived from ``config.seed``: the data order of epoch ``k`` from
``(seed, k)`` and the frame permutation of a clip from ``(seed, epoch, clip index)``, so a run does
not depend on the batch composition or on how many processes share it. When
``torch.distributed`` is initialised, ``fit`` trains with DistributedDataParallel on
``config.batch_size // world_size`` clips per process (``batch_size`` is the global batch) and only
rank 0 writes files.
"""
from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from tqdm.auto import tqdm

from stdyn.core.pairs import shuffle_batch_frames
from stdyn.data.cache import atomic_write, is_intact, load_tensors, remove_entry, save_tensors
from stdyn.tasks import ACTION, Task
from stdyn.tasks import get as get_task
from stdyn.tasks.base import Batch, to_device
from stdyn.training.augment import AppearanceJitter

if TYPE_CHECKING:
    from stdyn.training.profiles import Profile

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "poly")
POLY_POWER = 0.9


def metric_columns(task: Task | str = ACTION) -> list[str]:
    """The columns of :func:`fit`'s metrics table for ``task`` (its score is ``train_{metric}``, ``val_{metric}``)."""
    metric = get_task(task).metric
    return ["epoch", "phase", "lr", "train_loss", f"train_{metric}", f"val_{metric}", "seconds"]


METRIC_COLUMNS = metric_columns(ACTION)


@dataclass
class TrainConfig:
    """Hyperparameters of one training run (JSON-serialisable with ``dataclasses.asdict``).

    ``batch_size`` is the global batch: with DDP each of W processes sees ``batch_size // W``.
    The learning rate rises linearly from ``warmup_start_factor * lr`` to ``lr`` over
    ``warmup_epochs``, then follows a cosine (``schedule="cosine"``) or the poly schedule
    ``(1 - progress) ** 0.9`` (``"poly"``, as segmentation models train) to zero at the end of ``epochs``. If
    ``finetune_epochs > 0``, a second phase follows at the constant ``finetune_lr``; callbacks'
    ``on_phase_change(model)`` runs right before it (e.g. to switch a dropout off).
    ``shuffle_frames`` trains and validates on clips whose frames are randomly permuted.
    ``appearance`` is the probability that a training clip is randomly recoloured
    (:mod:`stdyn.training.augment`), drawn per clip and epoch from ``seed``. ``examples_per_clip``
    (tasks whose examples are frames of clips) trains on that many evenly spaced frames of each
    clip instead of every frame; validation sees every frame. ``validate_every_epoch=False``
    scores ``val_set`` after the last epoch only (the others' ``val_*`` are NaN).
    """

    epochs: int = 10
    batch_size: int = 32
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.05
    momentum: float = 0.9
    warmup_epochs: float = 1.0
    warmup_start_factor: float = 0.1
    schedule: str = "cosine"
    shuffle_frames: bool = False
    appearance: float = 0.0
    examples_per_clip: int | None = None
    validate_every_epoch: bool = True
    label_smoothing: float = 0.0
    seed: int = 0
    device: str = "cpu"
    amp: bool = False
    grad_clip: float | None = None
    finetune_epochs: int = 0
    finetune_lr: float = 1e-5

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of {OPTIMIZERS}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose one of {SCHEDULES}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs} and {self.batch_size}")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ValueError(f"warmup_epochs must lie in [0, epochs={self.epochs}], got {self.warmup_epochs}")
        if not 0.0 <= self.appearance <= 1.0:
            raise ValueError(f"appearance is a probability in [0, 1], got {self.appearance}")
        if self.examples_per_clip is not None and self.examples_per_clip < 1:
            raise ValueError(f"examples_per_clip must be >= 1 (or None: every frame), got {self.examples_per_clip}")
        if self.finetune_epochs < 0:
            raise ValueError(f"finetune_epochs must be >= 0, got {self.finetune_epochs}")

    @classmethod
    def from_profile(cls, profile: Profile | str, *, task: Task | str = ACTION, model: str | None = None,
                     **overrides: Any) -> TrainConfig:
        """The training settings of a profile (see :mod:`stdyn.training.profiles`) for ``task`` (and
        ``model``, which may have its own), with overrides.

        The warm-up is cut to ``epochs`` when an override shortens the run below it.
        """
        from stdyn.training import profiles

        profile = profiles.get(profile)
        values = {"device": profile.device, "amp": profile.amp, **get_task(task).train_settings(profile, model or "")}
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"TrainConfig has no field(s) {sorted(unknown)}; fields: {sorted(known)}")
        values.update(overrides)
        if "warmup_epochs" not in overrides:  # a shortened run keeps a warm-up that fits
            values["warmup_epochs"] = min(values["warmup_epochs"], values["epochs"])
        return cls(**values)

    @property
    def total_epochs(self) -> int:
        return self.epochs + self.finetune_epochs


def lr_schedule(config: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """The learning rate used at each global step (0-based): warm-up, cosine, then fine-tune."""
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)
    main_steps = config.epochs * steps_per_epoch

    def lr_at(step: int) -> float:
        if step >= main_steps:
            return config.finetune_lr
        if step < warmup_steps:
            start = config.warmup_start_factor
            return config.lr * (start + (1 - start) * step / warmup_steps)
        progress = (step - warmup_steps) / max(1, main_steps - warmup_steps)
        if config.schedule == "poly":
            return config.lr * (1 - progress) ** POLY_POWER
        return config.lr * 0.5 * (1 + np.cos(np.pi * progress))

    return lr_at


@dataclass
class TrainState:
    """What callbacks see: the (unwrapped) model, its optimizer and where training stands."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    config: TrainConfig
    epoch: int  # 0-based index of the running epoch
    step: int  # global optimizer step about to be taken
    phase: str  # "train" or "finetune"
    lr: float
    rank: int = 0
    world_size: int = 1


class Callback:
    """Hooks into :func:`fit`. Override what you need; state survives resumption.

    ``state_dict`` / ``load_state_dict`` save and restore whatever the callback keeps between
    steps, so a resumed run reproduces the uninterrupted one. ``describe`` names the callback and
    its settings; the model cache puts it in the key of models trained with it.
    """

    def on_build(self, model: nn.Module) -> None:
        """Change a freshly built model (e.g. insert a layer) before it trains or saved weights load
        into it: :func:`fit` calls it first, and the model cache on every copy it rebuilds."""

    def on_fit_start(self, state: TrainState) -> None:
        """Once, before the first step (also when resuming)."""

    def on_step(self, state: TrainState, clips: torch.Tensor, labels: torch.Tensor) -> None:
        """Before each training step, with the batch's first input (the clips; frames already
        shuffled if configured) and its targets."""

    def on_epoch_end(self, state: TrainState, row: dict[str, Any]) -> None:
        """After each epoch's validation, with that epoch's metrics row."""

    def on_phase_change(self, model: nn.Module) -> None:
        """Before the fine-tuning phase. When a run resumes inside that phase this is called
        again on the fresh model before its weights are loaded, so it must be a change of
        structure or settings that does not depend on the weights."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {"type": f"{type(self).__module__}.{type(self).__qualname__}"}


# ----------------------------------------------------------------------------- helpers


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed derived from any printable parts (stable across runs and machines)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _distributed() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    if _distributed()[1] > 1:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def resolve_device(device: str | torch.device) -> torch.device:
    """``torch.device(device)``, with a clear error when CUDA is asked for but missing."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device {str(device)!r} was requested but CUDA is not available here; "
            "pass device='cpu' (and a CPU-sized profile such as 'quick')"
        )
    return device


def frame_orders(n_clips: int, frames: int, seed: int, stream: str) -> torch.Tensor:
    """A random frame order (never the identity) for each of ``n_clips`` clips, (n_clips, frames).

    Row ``i`` is the order of dataset clip ``i``: fixed by ``(seed, stream)``, the same whatever the
    batch size or number of processes. Drawn with :func:`stdyn.core.pairs.shuffle_batch_frames` applied
    to the frame numbers.
    """
    frame_numbers = torch.arange(frames, dtype=torch.float32).view(1, 1, frames, 1, 1).expand(n_clips, -1, -1, -1, -1)
    generator = torch.Generator().manual_seed(derive_seed(seed, stream))
    return shuffle_batch_frames(frame_numbers, generator).view(n_clips, frames).long()


def apply_frame_orders(clips: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
    """Clips (B, 3, T, H, W) with the frames of clip ``b`` in the order ``orders[b]``."""
    index = orders.to(clips.device)[:, None, :, None, None].expand_as(clips)
    return torch.gather(clips, 2, index)


class _FrameShuffle:
    """Shuffles the frames of batches of one dataset, clip ``i`` always in the order ``i`` of
    :func:`frame_orders` for ``(seed, stream)`` (drawn on the first batch, when T is known)."""

    def __init__(self, n_clips: int, seed: int, stream: str) -> None:
        self.n_clips, self.seed, self.stream = n_clips, seed, stream
        self.orders: torch.Tensor | None = None

    def __call__(self, clips: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        if self.orders is None:
            self.orders = frame_orders(self.n_clips, clips.shape[2], self.seed, self.stream)
        return apply_frame_orders(clips, self.orders[indices])


class _Indexed(Dataset):
    """Yields ``(index, example)`` (the task's tuple of tensors) so that per-item randomness can be
    keyed by index."""

    def __init__(self, dataset: Dataset, task: Task) -> None:
        self.dataset, self.task = dataset, task

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[int, Batch]:
        return index, self.task.example(self.dataset[index], index)


def _amp(device: torch.device, enabled: bool) -> torch.autocast:
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled and device.type == "cuda")


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


# ----------------------------------------------------------------------------- evaluation


def _predict_indices(
    model: nn.Module,
    dataset: Dataset,
    indices: Sequence[int],
    task: Task,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    device: torch.device,
    amp: bool,
    progress: bool,
    num_workers: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    loader = DataLoader(Subset(_Indexed(dataset, task), list(indices)), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, pin_memory=device.type == "cuda")
    was_training = model.training
    model.eval()
    outputs, scores, targets = [], [], []
    shuffle_batch = _FrameShuffle(len(dataset), seed, "eval") if shuffle else None  # type: ignore[arg-type]
    try:
        with torch.no_grad():
            for index, batch in tqdm(loader, desc="evaluate", leave=False, disable=not progress):
                batch = to_device(batch, device)
                if shuffle_batch is not None:
                    batch = task.shuffle_frames(batch, index, shuffle_batch)
                with _amp(device, amp):
                    output = model(*task.inputs(model, batch)).float()
                outputs.append(output.cpu())
                scores.append(task.scores(output, batch).cpu())
                targets.append(task.target(batch).cpu())
    finally:
        model.train(was_training)
    if not outputs:
        raise ValueError("cannot evaluate on an empty dataset")
    return torch.cat(outputs), torch.cat(targets), torch.cat(scores)


def predict(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 64,
    shuffle_frames: bool = False,
    seed: int = 0,
    device: str | torch.device = "cpu",
    amp: bool = False,
    progress: bool = False,
    task: Task | str = ACTION,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs and targets of every example, in dataset order, on the CPU: logits (N, K) and labels
    (N,) for action recognition, mask logits (N, 1, H, W) and masks for segmentation.

    With ``shuffle_frames`` each clip's frames are permuted in an order fixed by ``seed`` and its
    index. The model is put in eval mode and given back in the mode it had.
    """
    device = resolve_device(device)
    model.to(device)
    task = get_task(task)
    examples = task.examples(dataset)
    outputs, targets, _ = _predict_indices(
        model, examples, range(len(examples)), task, batch_size=batch_size,  # type: ignore[arg-type]
        shuffle=shuffle_frames, seed=seed, device=device, amp=amp, progress=progress,
    )
    return outputs, targets


def evaluate(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 64,
    shuffle_frames: bool = False,
    seed: int = 0,
    device: str | torch.device = "cpu",
    amp: bool = False,
    progress: bool = False,
    num_workers: int = 0,
    task: Task | str = ACTION,
) -> float:
    """The task's metric on ``dataset`` (top-1 accuracy; mean IoU over frames for segmentation);
    under torch.distributed each process scores a shard."""
    device = resolve_device(device)
    model.to(device)
    task = get_task(task)
    dataset = task.examples(dataset)
    rank, world = _distributed()
    indices = range(rank, len(dataset), world)  # type: ignore[arg-type]
    counts = torch.zeros(2, dtype=torch.float64, device=device if world > 1 else "cpu")
    if len(indices):
        _, _, scores = _predict_indices(
            model, dataset, indices, task, batch_size=batch_size, shuffle=shuffle_frames, seed=seed,
            device=device, amp=amp, progress=progress, num_workers=num_workers,
        )
        counts[0] += scores.sum().item()
        counts[1] += len(scores)
    correct, total = _all_reduce_sum(counts).tolist()
    if total == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    return correct / total


# ----------------------------------------------------------------------------- checkpoints


def checkpoint_path(run_dir: Path, epoch: int) -> Path:
    """The weights of ``run_dir`` after ``epoch`` epochs (0: the initial weights)."""
    return Path(run_dir) / f"epoch_{epoch:03d}.pt"


def _state_path(run_dir: Path, epoch: int) -> Path:
    return Path(run_dir) / f"state_{epoch:03d}.pt"


def saved_epochs(run_dir: Path) -> list[int]:
    """Epochs whose weights are intact in ``run_dir``, ascending."""
    epochs = sorted(int(p.stem.split("_")[1]) for p in Path(run_dir).glob("epoch_[0-9][0-9][0-9].pt"))
    return [e for e in epochs if is_intact(checkpoint_path(run_dir, e))]


def read_checkpoint(run_dir: Path, epoch: int) -> dict[str, Any]:
    """The checkpoint after ``epoch`` epochs: ``model`` (state dict), ``metrics`` (rows so far),
    ``config`` and ``epoch``. Raises FileNotFoundError when it is missing or corrupt."""
    saved = load_tensors(checkpoint_path(run_dir, epoch))
    if saved is None:
        raise FileNotFoundError(
            f"no intact checkpoint for epoch {epoch} in {run_dir}; intact epochs: {saved_epochs(run_dir)}"
        )
    return saved


def load_weights(model: nn.Module, run_dir: Path, epoch: int) -> nn.Module:
    """Load the weights saved after ``epoch`` epochs into ``model`` (in place) and return it."""
    model.load_state_dict(read_checkpoint(run_dir, epoch)["model"])
    return model


def _comparable(config: TrainConfig) -> dict[str, Any]:
    values = asdict(config)
    values.pop("device")  # a run may resume on another device
    return values


def _find_resume_point(run_dir: Path, config: TrainConfig) -> tuple[dict, dict] | None:
    """The latest (weights, training state) pair that is intact, or None."""
    states = sorted(Path(run_dir).glob("state_[0-9][0-9][0-9].pt"), reverse=True)
    for path in states:
        epoch = int(path.stem.split("_")[1])
        state = load_tensors(path)
        weights = load_tensors(checkpoint_path(run_dir, epoch))
        if state is None or weights is None:
            continue
        saved_config = {k: v for k, v in weights["config"].items() if k != "device"}
        if saved_config != _comparable(config):
            raise ValueError(
                f"{run_dir} holds a run with another configuration ({weights['config']}); "
                "use a fresh run_dir or delete that one"
            )
        return weights, state
    return None


def _clear_run(run_dir: Path) -> None:
    """Remove what an earlier, unusable run left in ``run_dir``."""
    run_dir = Path(run_dir)
    remove_entry([*run_dir.glob("epoch_[0-9][0-9][0-9].pt"), *run_dir.glob("state_[0-9][0-9][0-9].pt"),
                  run_dir / "metrics.csv"])


def _write_metrics(run_dir: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    frame = pd.DataFrame(rows, columns=columns)
    atomic_write(Path(run_dir) / "metrics.csv", lambda tmp: frame.to_csv(tmp, index=False))


# ----------------------------------------------------------------------------- training


def _wrap(model: nn.Module, device: torch.device, world: int) -> nn.Module:
    if world == 1:
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def fit(
    model: nn.Module,
    train_set: Dataset,
    val_set: Dataset | None,
    config: TrainConfig,
    run_dir: Path | None = None,
    *,
    progress: bool = True,
    callbacks: Sequence[Callback] | None = None,
    num_workers: int = 0,
    task: Task | str = ACTION,
) -> pd.DataFrame:
    """Train ``model`` in place for ``task``; return one metrics row per epoch.

    Columns (:func:`metric_columns`): epoch (1-based), phase ("train" | "finetune"), lr (at the
    epoch's first step), train_loss, the task's score on the training batches and on ``val_set``
    (``train_acc``, ``val_acc`` for action recognition; ``train_miou``, ``val_miou`` for
    segmentation; NaN without ``val_set``), seconds. With ``run_dir``, every
    epoch is checkpointed and a later call resumes where an interrupted one stopped (a finished
    run is loaded, not retrained). The model is left in eval mode on ``config.device``.
    ``num_workers`` loader processes prepare batches (results do not depend on it).
    BatchNorm statistics are per process under DDP; convert with
    ``nn.SyncBatchNorm.convert_sync_batchnorm`` first to match a single-process run exactly.
    """
    callbacks = list(callbacks or [])
    task = get_task(task)
    train_set = task.examples(train_set, per_clip=config.examples_per_clip)
    val_set = task.examples(val_set) if val_set is not None else None
    columns = metric_columns(task)
    device = resolve_device(config.device)
    rank, world = _distributed()
    writes = run_dir is not None and rank == 0
    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} must be divisible by the {world} processes")
    local_batch = config.batch_size // world
    examples = _Indexed(train_set, task)
    sampler = DistributedSampler(examples, num_replicas=world, rank=rank, shuffle=True, seed=config.seed)
    loader = DataLoader(examples, batch_size=local_batch, sampler=sampler, drop_last=True,
                        num_workers=num_workers, pin_memory=device.type == "cuda",
                        persistent_workers=num_workers > 0)
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise ValueError(
            f"{len(train_set)} training examples make no full batch of {config.batch_size}; "  # type: ignore[arg-type]
            "lower batch_size or add clips"
        )
    lr_at = lr_schedule(config, steps_per_epoch)
    for callback in callbacks:
        callback.on_build(model)
    model.to(device)
    optimizer = _make_optimizer(model, config)

    rows: list[dict[str, Any]] = []
    start_epoch = 0
    resume = _find_resume_point(run_dir, config) if run_dir is not None else None
    state = TrainState(model, optimizer, config, epoch=0, step=0, phase="train", lr=lr_at(0), rank=rank, world_size=world)
    for callback in callbacks:
        callback.on_fit_start(state)
    if resume is None:
        _seed_everything(config.seed)
        if writes:
            _clear_run(run_dir)  # type: ignore[arg-type]
            _save_checkpoint(run_dir, 0, model, optimizer, config, rows, callbacks, step=0, columns=columns)  # type: ignore[arg-type]
    else:
        weights, saved = resume
        start_epoch = weights["epoch"]
        if start_epoch > config.epochs and config.finetune_epochs:
            for callback in callbacks:
                callback.on_phase_change(model)
        model.load_state_dict(weights["model"])
        optimizer.load_state_dict(saved["optimizer"])
        for callback, callback_state in zip(callbacks, saved["callbacks"]):
            callback.load_state_dict(callback_state)
        rows = list(weights["metrics"])
        state.step = saved["step"]
        _set_rng_state(saved["rng"])

    network = _wrap(model, device, world)
    show = progress and rank == 0
    epochs_bar = tqdm(range(start_epoch, config.total_epochs), desc="epochs", initial=start_epoch,
                      total=config.total_epochs, disable=not show)
    for epoch in epochs_bar:
        if epoch == config.epochs and config.finetune_epochs:
            for callback in callbacks:
                callback.on_phase_change(model)
            network = _wrap(model, device, world)  # the callback may have changed the modules
        started = time.perf_counter()
        state.epoch, state.phase = epoch, "train" if epoch < config.epochs else "finetune"
        sampler.set_epoch(epoch)
        model.train()
        totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, score sum, count
        first_lr = lr_at(state.step)
        shuffle_batch = _FrameShuffle(len(train_set), config.seed, f"train/{epoch}") if config.shuffle_frames else None  # type: ignore[arg-type]
        recolour_batch = None
        if config.appearance > 0:
            generator = torch.Generator().manual_seed(derive_seed(config.seed, f"appearance/{epoch}"))
            recolour_batch = AppearanceJitter(len(train_set), config.appearance, generator)  # type: ignore[arg-type]
        for index, batch in tqdm(loader, desc=f"epoch {epoch + 1}", leave=False, disable=not show):
            batch = to_device(batch, device)
            if recolour_batch is not None:
                batch = task.recolour(batch, index, recolour_batch)
            if shuffle_batch is not None:
                batch = task.shuffle_frames(batch, index, shuffle_batch)
            state.lr = lr_at(state.step)
            for group in optimizer.param_groups:
                group["lr"] = state.lr
            target = task.target(batch)
            for callback in callbacks:
                callback.on_step(state, batch[0], target)
            with _amp(device, config.amp):
                outputs = network(*task.inputs(model, batch))
            loss = task.loss(model, outputs, batch, config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            state.step += 1
            totals += torch.stack([
                loss.detach().double() * len(target),
                task.scores(outputs.detach().float(), batch).sum().double(),
                torch.full((), float(len(target)), dtype=torch.float64, device=device),
            ])
        loss_sum, score_sum, count = _all_reduce_sum(totals).tolist()
        val_score = float("nan")
        if val_set is not None and (config.validate_every_epoch or epoch + 1 == config.total_epochs):
            val_score = evaluate(model, val_set, batch_size=local_batch, shuffle_frames=config.shuffle_frames,
                                 seed=config.seed, device=device, amp=config.amp, num_workers=num_workers, task=task)
        row = dict(zip(columns, [epoch + 1, state.phase, first_lr, loss_sum / count, score_sum / count, val_score,
                                 time.perf_counter() - started]))
        rows.append(row)
        for callback in callbacks:
            callback.on_epoch_end(state, row)
        epochs_bar.set_postfix(loss=f"{row['train_loss']:.3f}", **{f"val_{task.metric}": f"{val_score:.3f}"})
        if writes:
            _save_checkpoint(run_dir, epoch + 1, model, optimizer, config, rows, callbacks, step=state.step,
                             columns=columns)  # type: ignore[arg-type]
    if world > 1:
        dist.barrier()
    model.eval()
    return pd.DataFrame(rows, columns=columns)


def _save_checkpoint(
    run_dir: Path,
    epoch: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    rows: list[dict[str, Any]],
    callbacks: Sequence[Callback],
    *,
    step: int,
    columns: list[str],
) -> None:
    """Weights after ``epoch`` epochs, then the training state; older states are dropped."""
    run_dir = Path(run_dir)
    save_tensors(
        checkpoint_path(run_dir, epoch),
        {"epoch": epoch, "model": model.state_dict(), "metrics": list(rows), "config": asdict(config)},
    )
    save_tensors(
        _state_path(run_dir, epoch),
        {"epoch": epoch, "step": step, "optimizer": optimizer.state_dict(), "rng": _rng_state(),
         "callbacks": [callback.state_dict() for callback in callbacks]},
    )
    remove_entry(_state_path(run_dir, e) for e in range(epoch))
    _write_metrics(run_dir, rows, columns)
