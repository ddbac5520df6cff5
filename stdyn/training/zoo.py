"""The trained-model cache: every chapter asks for (model, world, profile, seed, ...) and gets
the same trained network, trained once on first use.

>>> entry = zoo.get("i3d", "ssv2", profile="quick")
>>> entry.model            # trained, in eval mode
>>> entry.metrics          # one row per epoch
>>> entry.checkpoint(3)    # the same network after 3 epochs (0: initial weights)
>>> train, val = zoo.datasets("ssv2", "quick")   # the data it was trained and validated on
>>> zoo.get("matnet", "davis+ytvos")  # the task follows the world: a segmentation model on two worlds

An entry lives in ``cache_dir("zoo", key)``, where the key hashes the whole configuration (model
and its arguments, world and its arguments and sizes, training settings, callbacks) together with
the source code of the models, the worlds and the trainer. The entry is complete once its
``entry.json`` is written, after the last checkpoint; anything less is resumed or retrained, never
read.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import os
import pkgutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from stdyn import tasks, training
from stdyn.data.cache import atomic_write, cache_dir, config_key, is_intact, remove_entry, source_hash
from stdyn.training import profiles

ENTRY_FILE = "entry.json"
_FORMAT = "zoo/2"


@dataclass
class ZooEntry:
    """A trained model and what it was trained with."""

    model: nn.Module  # eval mode, on the requested device
    metrics: pd.DataFrame  # one row per epoch (see stdyn.training.fit)
    config: dict[str, Any]  # everything the cache key hashes
    run_dir: Path  # epoch checkpoints epoch_000.pt ... and metrics.csv
    key: str
    classes: list[str]  # what the outputs stand for: class names, or ["foreground"]
    device: torch.device
    _build: Callable[[], nn.Module] = field(repr=False)
    _callbacks: Sequence[training.Callback] = field(default=(), repr=False)
    task: tasks.Task = tasks.ACTION

    @property
    def val_score(self) -> float:
        """The task's metric on the held-out split after the last epoch (top-1; mIoU)."""
        return float(self.metrics[f"val_{self.task.metric}"].iloc[-1])

    @property
    def val_accuracy(self) -> float:
        """Top-1 accuracy on the held-out split after the last epoch (action recognition)."""
        if self.task.metric != "acc":
            raise ValueError(f"a {self.task.name} model has no accuracy; its metric is val_score "
                             f"({self.task.metric_label})")
        return self.val_score

    @property
    def epochs(self) -> list[int]:
        """Epochs with saved weights (0 holds the initial weights)."""
        return training.saved_epochs(self.run_dir)

    def checkpoint(self, epoch: int) -> nn.Module:
        """A new copy of the model with the weights it had after ``epoch`` epochs, in eval mode."""
        model = _fresh_model(self._build, self._callbacks, self.config["train"], epoch)
        return training.load_weights(model, self.run_dir, epoch).to(self.device).eval()


def get(
    model: str,
    world: str,
    *,
    profile: str | profiles.Profile = "quick",
    seed: int = 0,
    shuffle_frames: bool = False,
    model_kwargs: dict[str, Any] | None = None,
    train_overrides: dict[str, Any] | None = None,
    world_kwargs: dict[str, Any] | None = None,
    data_seed: int = 0,
    callbacks: Sequence[training.Callback] | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> ZooEntry:
    """The model ``model`` trained on world ``world`` at ``profile`` scale, from the cache or trained now.

    The world says the task (:func:`stdyn.tasks.of_world`): an action world, or VOS worlds joined
    with ``+`` (``"davis+ytvos"``), whose sizes and training come from ``profile.vos``.

    ``seed`` sets the initial weights, the data order and the frame shuffles; ``data_seed`` the
    generated clips (shared by all training seeds). ``model_kwargs`` add to the profile's
    arguments for this model, ``train_overrides`` change TrainConfig fields, ``world_kwargs`` go to
    the world's ``make``. ``callbacks`` take part in training (their ``describe()`` enters the
    key). ``device`` defaults to the profile's; it does not enter the key.
    """
    prof = profiles.get(profile)
    spec, key, run_dir = _locate(model, world, prof, seed=seed, shuffle_frames=shuffle_frames,
                                 model_kwargs=model_kwargs, train_overrides=train_overrides,
                                 world_kwargs=world_kwargs, data_seed=data_seed, callbacks=callbacks,
                                 device=device)
    callbacks = list(callbacks or [])
    entry = _load(run_dir, spec, callbacks)
    if entry is not None:
        return entry
    with _exclusive(run_dir):
        entry = _load(run_dir, spec, callbacks)  # another process may have finished it meanwhile
        if entry is None:
            _train(run_dir, key, spec, callbacks, prof.name, progress, prof.loader_workers)
            entry = _load(run_dir, spec, callbacks)
    if entry is None:
        raise RuntimeError(f"training finished but the entry in {run_dir} is not intact; check the disk")
    return entry


def get_many(requests: Sequence[dict[str, Any]], *, jobs: int | None = None,
             progress: bool = True) -> list[ZooEntry]:
    """``[get(**request) for request in requests]``, training the entries the cache lacks ``jobs``
    at a time, each in a process of its own.

    On a CPU, small models train faster side by side in single-threaded processes than one after
    another on all cores. ``jobs`` defaults to :func:`default_jobs`; every request is a dict of
    :func:`get`'s keyword arguments plus ``model`` and ``world``.
    """
    keys, found, missing, specs = [], {}, {}, {}
    for request in requests:
        options = {k: v for k, v in request.items() if k not in ("model", "world", "progress")}
        prof = profiles.get(options.pop("profile", "quick"))
        spec, key, run_dir = _locate(request["model"], request["world"], prof, **options)
        keys.append(key)
        entry = _load(run_dir, spec, list(options.get("callbacks") or []))
        if entry is not None:
            found[key] = entry
        else:
            missing[key], specs[key] = {**request, "profile": prof}, spec
    jobs = min(jobs or default_jobs({spec.train.device for spec in specs.values()}), len(missing))
    if jobs > 1:
        splits = {(r["world"], json.dumps(specs[k].data), json.dumps(r.get("world_kwargs"), sort_keys=True)): r
                  for k, r in missing.items()}
        for request in splits.values():  # every world once, here, before the workers read it
            datasets(request["world"], request["profile"], seed=request.get("data_seed", 0),
                     world_kwargs=request.get("world_kwargs"), progress=progress)
        threads = max(1, torch.get_num_threads() // jobs)
        # The longest first, so that the last to finish does not run alone for long.
        order = sorted(missing, key=lambda k: specs[k].train.total_epochs * specs[k].data["n_train"], reverse=True)
        workers = _Workers()
        with ThreadPoolExecutor(jobs) as pool:
            futures = [pool.submit(_train_in_process, missing[key], threads, workers) for key in order]
            done = as_completed(futures)
            if progress:
                done = tqdm(done, total=len(futures), desc=f"training {len(futures)} models, {jobs} at a time")
            try:
                for future in done:
                    future.result()
            except BaseException:  # a failed worker or an interrupt: stop the others (their entries resume later)
                for future in futures:
                    future.cancel()
                workers.stop()
                raise
    return [found[key] if key in found else get(**{**request, "progress": progress})
            for key, request in zip(keys, requests)]


def default_jobs(devices: Iterable[str] = ("cpu",)) -> int:
    """Training processes to run side by side: ``$STDYN_JOBS`` if set, else one per CPU core when
    every model trains on the CPU, else 1 (one accelerator, one process)."""
    if os.environ.get("STDYN_JOBS"):
        try:
            jobs = int(os.environ["STDYN_JOBS"])
        except ValueError:
            jobs = 0
        if jobs < 1:
            raise ValueError(f"STDYN_JOBS={os.environ['STDYN_JOBS']!r} must be a whole number >= 1")
        return jobs
    if any(not device.startswith("cpu") for device in devices):
        return 1
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


class _Workers:
    """The worker processes of one :func:`get_many` call; :meth:`stop` kills them and refuses new ones."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen] = set()
        self._stopped = False

    def run(self, command: list[str], env: dict[str, str]) -> tuple[int, str]:
        """Run ``command`` to its end; its exit status and standard error."""
        with self._lock:
            if self._stopped:
                raise RuntimeError("training stopped")
            worker = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            self._running.add(worker)
        try:
            _, errors = worker.communicate()
        finally:
            with self._lock:
                self._running.discard(worker)
        return worker.returncode, errors

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            for worker in self._running:
                worker.kill()


def _train_in_process(request: dict[str, Any], threads: int, workers: _Workers) -> None:
    """Train one :func:`get_many` request in a fresh Python process with ``threads`` threads.

    A new interpreter (not a fork, nor multiprocessing's spawn, which re-runs the caller's main
    script) works the same from a notebook, a script or a REPL.
    """
    with tempfile.TemporaryDirectory(prefix="stdyn-train-") as folder:
        path = Path(folder) / "request.pt"
        torch.save({**request, "progress": False}, path)
        # The caller's import path, so that a model of its own ("package.module:factory") imports.
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
               "PYTHONPATH": os.pathsep.join(entry for entry in sys.path if entry)}
        status, errors = workers.run([sys.executable, "-c", f"from stdyn.training.zoo import _train_saved; "
                                      f"_train_saved({str(path)!r})"], env)
    if status != 0:
        raise RuntimeError(f"training {request['model']} on {request['world']} in a worker process failed "
                           f"(exit {status}):\n{errors[-3000:]}")


def _train_saved(path: str) -> None:
    """A worker process's entry point: train (or find) the entry of the request saved at ``path``."""
    get(**torch.load(path, weights_only=False))


def _locate(model: str, world: str, prof: profiles.Profile, **options: Any) -> tuple[TrainSpec, str, Path]:
    """The spec, cache key and run folder of one entry (options are :func:`get`'s)."""
    callbacks = options.get("callbacks")
    spec = TrainSpec.build(model, world, prof, seed=options.get("seed", 0),
                           shuffle_frames=options.get("shuffle_frames", False),
                           model_kwargs=options.get("model_kwargs"), train_overrides=options.get("train_overrides"),
                           world_kwargs=options.get("world_kwargs"), data_seed=options.get("data_seed", 0),
                           callbacks=callbacks, device=options.get("device"))
    key = config_key({"config": spec.key_dict(), "code": _code_fingerprint(model, world, list(callbacks or []))})
    return spec, key, cache_dir("zoo", key)


@dataclass
class TrainSpec:
    """Everything that defines one zoo entry (``key_dict`` is what gets hashed)."""

    task: str
    model: str
    model_kwargs: dict[str, Any]
    world: str
    world_kwargs: dict[str, Any]
    data: dict[str, Any]  # n_train, n_val, frames, size, seed
    train: training.TrainConfig
    callbacks: list[dict[str, Any]]

    @classmethod
    def build(cls, model: str, world: str, prof: profiles.Profile, *, seed: int, shuffle_frames: bool,
              model_kwargs: dict[str, Any] | None, train_overrides: dict[str, Any] | None,
              world_kwargs: dict[str, Any] | None, data_seed: int,
              callbacks: Sequence[training.Callback] | None, device: str | torch.device | None) -> TrainSpec:
        task = tasks.of_world(world)
        overrides = {"seed": seed, "shuffle_frames": shuffle_frames, **(train_overrides or {})}
        config = training.TrainConfig.from_profile(prof, task=task, model=model, **overrides)
        if device is not None:
            config = replace(config, device=str(device))
        training.resolve_device(config.device)  # fail now, not after generating the data
        return cls(
            task=task.name,
            model=model,
            model_kwargs={**task.model_kwargs(prof, model), **(model_kwargs or {})},
            world=world,
            world_kwargs=dict(world_kwargs or {}),
            data=task.data_sizes(prof, data_seed),
            train=config,
            callbacks=[callback.describe() for callback in callbacks or []],
        )

    def key_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["train"].pop("device")  # where a model trained does not change what it is
        values["format"] = _FORMAT
        return json.loads(json.dumps(values, sort_keys=True, default=str))


# ----------------------------------------------------------------------------- data


def datasets(
    world: str,
    profile: str | profiles.Profile = "quick",
    *,
    seed: int = 0,
    world_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
) -> tuple[Dataset, Dataset]:
    """The (train, val) datasets of ``world`` at ``profile`` sizes: those zoo models train and
    validate on (``seed`` is the ``data_seed`` of :func:`get`)."""
    return _splits(world, tasks.of_world(world).data_sizes(profiles.get(profile), seed), world_kwargs or {}, progress)


def measure_set(
    world: str,
    profile: str | profiles.Profile = "quick",
    *,
    seed: int = 0,
    world_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
) -> Dataset:
    """The first ``profile.n_measure`` held-out clips (``profile.vos.n_measure`` of each VOS world):
    the clips chapters measure models on."""
    prof = profiles.get(profile)
    task = tasks.of_world(world)
    data = task.data_sizes(prof, seed)
    val = _cached_split(world, "val", data["n_val"], data["frames"], data["size"], data["seed"],
                        json.dumps(world_kwargs or {}, sort_keys=True), progress)  # no training split: moca has none
    return task.first_clips(val, prof)


def _splits(world: str, data: dict[str, int], world_kwargs: dict[str, Any],
            progress: bool) -> tuple[Dataset, Dataset]:
    shape = (data["frames"], data["size"], data["seed"], json.dumps(world_kwargs, sort_keys=True), progress)
    return _cached_split(world, "train", data["n_train"], *shape), _cached_split(world, "val", data["n_val"], *shape)


_RECENT_SPLITS: OrderedDict[tuple, Dataset] = OrderedDict()  # the last few, so a chapter builds each once
_RECENT_LIMIT = 4


def _cached_split(world: str, split: str, n: int, frames: int, size: int, seed: int, kwargs: str,
                  progress: bool) -> Dataset:
    key = (world, split, n, frames, size, seed, kwargs)
    if key not in _RECENT_SPLITS:
        _RECENT_SPLITS[key] = _make_dataset(world, split, n=n, frames=frames, size=size, seed=seed,
                                            progress=progress, **json.loads(kwargs))
        while len(_RECENT_SPLITS) > _RECENT_LIMIT:
            _RECENT_SPLITS.popitem(last=False)
    _RECENT_SPLITS.move_to_end(key)
    return _RECENT_SPLITS[key]


def _make_dataset(world: str, split: str, **kwargs: Any) -> Dataset:
    return tasks.of_world(world).make_dataset(world, split, **kwargs)


# ----------------------------------------------------------------------------- models and code


def _new_model(name: str, num_classes: int, seed: int, kwargs: dict[str, Any]) -> nn.Module:
    from stdyn import models

    return models.create(name, num_classes, seed=seed, **kwargs)


def _package_modules(name: str) -> list[ModuleType]:
    """A module, or a package with all its submodules (those with source code to hash)."""
    package = importlib.import_module(name)
    modules = [package]
    for info in pkgutil.walk_packages(getattr(package, "__path__", []), prefix=f"{name}."):
        modules.append(importlib.import_module(info.name))
    # Namespace packages have no file, and inspect cannot read the source of an empty one.
    return [m for m in modules if getattr(m, "__file__", None) and Path(m.__file__).stat().st_size]


def _code_fingerprint(model: str, world: str, callbacks: Sequence[training.Callback]) -> str:
    """Hash of the code that makes an entry: the trainer, the tasks, every model, the world's
    generator (as the worlds key their own cache), the callbacks and a user's model module."""
    from stdyn.core import pairs
    from stdyn.training import augment

    names = ["stdyn.models", "stdyn.tasks", *(type(callback).__module__ for callback in callbacks)]
    if ":" in model:
        names.append(model.partition(":")[0])
    modules = [module for name in dict.fromkeys(names) for module in _package_modules(name)]
    world_code = tasks.of_world(world).code_modules(world)
    return source_hash(*dict.fromkeys([training.loop, augment, pairs.shuffle_batch_frames, *world_code, *modules]))


def _fresh_model(build: Callable[[], nn.Module], callbacks: Sequence[training.Callback],
                 train_config: dict[str, Any], epoch: int) -> nn.Module:
    """A new model shaped like the run's after ``epoch`` epochs (callbacks may change the modules
    when it is built and when fine-tuning starts)."""
    model = build()
    for callback in callbacks:
        callback.on_build(model)
    if train_config["finetune_epochs"] and epoch > train_config["epochs"]:
        for callback in callbacks:
            callback.on_phase_change(model)
    return model


# ----------------------------------------------------------------------------- entries


def _train(run_dir: Path, key: str, spec: TrainSpec, callbacks: Sequence[training.Callback],
           profile_name: str, progress: bool, loader_workers: int) -> None:
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    if rank == 0:
        remove_entry([run_dir / ENTRY_FILE])
    task = tasks.get(spec.task)
    train_set, val_set = _splits(spec.world, spec.data, spec.world_kwargs, progress)
    classes = task.output_names(train_set)
    model = _new_model(spec.model, len(classes), spec.train.seed, spec.model_kwargs)
    if progress and rank == 0:
        print(f"training {spec.model} on {spec.world} ({profile_name}, seed {spec.train.seed}) in {run_dir}")
    started = time.perf_counter()
    metrics = training.fit(model, train_set, val_set, spec.train, run_dir, progress=progress, callbacks=callbacks,
                           num_workers=loader_workers, task=task)
    if rank == 0:
        record = {
            "key": key,
            "config": spec.key_dict(),
            "classes": classes,
            "profile": profile_name,
            "val_score": float(metrics[f"val_{task.metric}"].iloc[-1]),
            "train_seconds": float(metrics["seconds"].sum()),
            "wall_seconds": time.perf_counter() - started,
            "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "torch": torch.__version__,
        }
        atomic_write(run_dir / ENTRY_FILE, lambda tmp: tmp.write_text(json.dumps(record, indent=2)))
    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # the others read entry.json next


def _load(run_dir: Path, spec: TrainSpec, callbacks: Sequence[training.Callback]) -> ZooEntry | None:
    """The complete entry in ``run_dir``, or None when it is missing, partial or corrupt."""
    entry_path = run_dir / ENTRY_FILE
    if not is_intact(entry_path):
        return None
    record = json.loads(entry_path.read_text())
    if record["config"] != spec.key_dict():
        return None
    classes = record["classes"]
    device = training.resolve_device(spec.train.device)

    def build() -> nn.Module:
        return _new_model(spec.model, len(classes), spec.train.seed, spec.model_kwargs)

    last = spec.train.total_epochs
    try:
        saved = training.read_checkpoint(run_dir, last)
    except FileNotFoundError:
        return None
    model = _fresh_model(build, callbacks, record["config"]["train"], last)
    model.load_state_dict(saved["model"])
    task = tasks.get(spec.task)
    metrics = pd.DataFrame(saved["metrics"], columns=training.metric_columns(task))
    return ZooEntry(model=model.to(device).eval(), metrics=metrics, config=record["config"], run_dir=run_dir,
                    key=record["key"], classes=classes, device=device, _build=build, _callbacks=list(callbacks),
                    task=task)


@contextlib.contextmanager
def _exclusive(run_dir: Path) -> Iterator[None]:
    """Hold a lock on ``run_dir`` so two processes do not train the same entry at once."""
    try:
        import fcntl
    except ImportError:  # not on POSIX: no lock
        yield
        return
    if dist.is_available() and dist.is_initialized():  # ranks train together
        yield
        return
    with open(run_dir / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def list_cached() -> pd.DataFrame:
    """One row per complete zoo entry: key, task, model, world, profile, seed, shuffle_frames, epochs,
    val_score (top-1 or mIoU), train_seconds, created, run_dir."""
    rows = []
    for entry_path in sorted(cache_dir("zoo").glob(f"*/{ENTRY_FILE}")):
        if not is_intact(entry_path):
            continue
        record = json.loads(entry_path.read_text())
        config = record["config"]
        rows.append({
            "key": record["key"],
            "task": config.get("task", "action"),
            "model": config["model"],
            "world": config["world"],
            "profile": record["profile"],
            "seed": config["train"]["seed"],
            "shuffle_frames": config["train"]["shuffle_frames"],
            "epochs": config["train"]["epochs"] + config["train"]["finetune_epochs"],
            "val_score": record.get("val_score", record.get("val_accuracy")),
            "train_seconds": record["train_seconds"],
            "created": record["created"],
            "run_dir": str(entry_path.parent),
        })
    columns = ["key", "task", "model", "world", "profile", "seed", "shuffle_frames", "epochs", "val_score",
               "train_seconds", "created", "run_dir"]
    return pd.DataFrame(rows, columns=columns)
