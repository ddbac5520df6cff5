"""Video models by name, each describing the stages where it can be measured.

::

    model = create("slowfast", num_classes=10)
    describe(model)                                  # name, channels, kind of each stage
    logits = model(prepare_input(model, clips))      # clips (B, 3, T, H, W) in [0, 1]

Names: the small CPU-trainable versions of the architectures the paper studies (``c2d``, ``i3d``,
``x3d``, ``slowonly``, ``fastonly``, ``slowfast``, ``timesformer``, ``mvit``; keyword arguments such
as ``width``, ``depth``, ``dim``, ``frames`` scale them up), torchvision's video models with random
weights (``r3d_18``, ``mc3_18``, ``r2plus1d_18``, ``s3d``, ``mvit_v1_b``, ``mvit_v2_s``,
``swin3d_t``), or ``"package.module:factory"`` for a model of your own. The two-stream video
object segmentation models (:mod:`stdyn.models.vos`: ``fusionseg``, ``matnet``, ``rtnet``, ...)
are here too: ``create("matnet", 1)`` has one mask output and is called ``model(rgb, flow_image)``.
So are the video instance segmentation models (:mod:`stdyn.models.vis`: ``vistr_r50``,
``vistr_r101``, small VisTR-like transformers): ``create("vistr_r50", num_classes)`` takes clips and
returns one packed tensor, taken apart by :func:`stdyn.models.vis.unpack_outputs`.

SlowOnly comes at any ResNet depth: ``create("slowonly", n, depth=18)`` (basic blocks) and
``create("slowonly", n, depth=50)`` (bottlenecks) are the two depths of the StaticDropout study;
the default ``depth=10`` has one block per stage.

Every model normalises inside, so it takes clips in [0, 1]; the stdyn models end in ``head``
(``head.pool`` -> ``head.dropout`` -> ``head.fc``). ``weights="file.pth"`` loads a state dict you
have on disk; nothing is ever downloaded.
"""
from __future__ import annotations

import contextlib
import difflib
import importlib
import inspect
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from stdyn.models import vis, vos
from stdyn.models.action import cnn3d, slowfast, torchvision_models, transformers, x3d
from stdyn.models.layers import ClassifierHead, GlobalAvgPool, Normalize, Stage, check_clips, output_channels

__all__ = [
    "ACTION_MODELS",
    "SEGMENTATION_MODELS",
    "VIS_MODELS",
    "ClassifierHead",
    "GlobalAvgPool",
    "Normalize",
    "Stage",
    "available",
    "check_clips",
    "create",
    "describe",
    "load_weights",
    "prepare_input",
]

_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "c2d": cnn3d.c2d,
    "i3d": cnn3d.i3d,
    "x3d": x3d.x3d,
    "slowonly": cnn3d.slowonly,
    "fastonly": cnn3d.fastonly,
    "slowfast": slowfast.slowfast,
    "timesformer": transformers.timesformer,
    "mvit": transformers.mvit,
}
ACTION_MODELS: tuple[str, ...] = tuple(_BUILDERS)


def _segmentation_builder(name: str) -> Callable[..., nn.Module]:
    def build(num_classes: int = 1, **kwargs: Any) -> nn.Module:
        return vos.VOS_MODELS[name](num_outputs=num_classes, **kwargs)

    build.__doc__ = f"The two-stream AVOS model {name!r} (stdyn.models.vos); num_classes is its mask count."
    return build


_BUILDERS.update({name: _segmentation_builder(name) for name in vos.VOS_MODELS})
SEGMENTATION_MODELS: tuple[str, ...] = tuple(vos.VOS_MODELS)
_BUILDERS.update(vis.VIS_MODELS)  # video instance segmentation: builders taking num_classes
VIS_MODELS: tuple[str, ...] = tuple(vis.VIS_MODELS)
_BUILDERS.update({name: partial(torchvision_models.build, name) for name in torchvision_models.NAMES})


def available() -> list[str]:
    """Names that :func:`create` knows: the stdyn action models, the two-stream segmentation
    models, then torchvision's."""
    return list(_BUILDERS)


def create(
    name: str,
    num_classes: int,
    *,
    weights: str | Path | None = None,
    seed: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build model ``name`` with ``num_classes`` outputs.

    ``weights`` is a state dict on disk (also accepted: a checkpoint dict holding it under
    ``state_dict``, ``model`` or ``model_state``); ``seed`` makes the random initialisation
    reproducible without touching the global random state. Other keyword arguments go to the
    model (see ``help(stdyn.models.action.cnn3d.slowonly)`` etc.).
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if ":" in name:
        factory = _import_factory(name)
        with _seeded(seed):
            model = _build_user_model(name, factory, num_classes, kwargs)
    else:
        builder = _lookup(name)
        _check_kwargs(name, builder, kwargs)
        with _seeded(seed):
            model = builder(num_classes=num_classes, **kwargs)
    if weights is not None:
        load_weights(model, weights)
    _check_stages(model, name)
    return model


def prepare_input(model: nn.Module, clips: Tensor) -> Tensor | list[Tensor]:
    """What ``model`` takes for a (B, 3, T, H, W) batch: ``model.pack_input(clips)`` if it has one."""
    pack = getattr(_unwrap(model), "pack_input", None)
    return pack(clips) if callable(pack) else clips


def describe(name_or_model: str | nn.Module, **kwargs: Any) -> pd.DataFrame:
    """The stages of a model (or of ``create(name, **kwargs)``): one row each, columns name, channels, kind."""
    if isinstance(name_or_model, str):
        kwargs.setdefault("num_classes", 2)
        model = create(name_or_model, **kwargs)
    else:
        model = _unwrap(name_or_model)
    stages = getattr(model, "stages", None)
    if stages is None:
        raise ValueError(
            f"{type(model).__name__} has no 'stages'; build it with stdyn.models.create, "
            "or set model.stages = [Stage(name, channels, kind), ...]"
        )
    return pd.DataFrame(
        [(s.name, s.channels, s.kind) for s in stages], columns=["name", "channels", "kind"]
    )


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a state dict from ``path`` into ``model`` (strictly: every key, every shape)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    target = model
    if isinstance(model, torchvision_models.TorchvisionVideoModel) and not any(
        k.startswith("net.") for k in state
    ):
        target = model.net  # torchvision's own checkpoint layout
    try:
        target.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(
            f"the weights in {path} do not fit this {type(model).__name__}; build it with the "
            f"num_classes and size arguments the weights were trained with.\n{error}"
        ) from error
    return model


def _lookup(name: str) -> Callable[..., nn.Module]:
    if name in _BUILDERS:
        return _BUILDERS[name]
    close = difflib.get_close_matches(name.lower(), list(_BUILDERS), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(
        f"unknown model {name!r}.{hint} Available: {', '.join(_BUILDERS)}; "
        "or give an import path 'package.module:factory'."
    )


def _check_kwargs(name: str, builder: Callable[..., nn.Module], kwargs: dict[str, Any]) -> None:
    parameters = inspect.signature(builder).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    accepted = [p for p in parameters if p != "num_classes"]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise TypeError(
            f"create({name!r}) got unexpected argument(s) {', '.join(unknown)}; "
            f"it accepts {', '.join(accepted)}, weights and seed"
        )


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _import_factory(path: str) -> Callable[..., nn.Module]:
    module_name, _, attribute = path.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"cannot import {module_name!r} for model {path!r}: {error}") from error
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ValueError(f"{module_name!r} has no {attribute!r} (model {path!r})")
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"{path!r} is not callable; it should be a function or class that returns an nn.Module")
    return target


def _build_user_model(
    path: str, factory: Callable[..., nn.Module], num_classes: int, kwargs: dict[str, Any]
) -> nn.Module:
    """Call a user's factory (with ``num_classes`` if it takes it); give the model default stages."""
    parameters = inspect.signature(factory).parameters
    takes_num_classes = "num_classes" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )
    model = factory(num_classes=num_classes, **kwargs) if takes_num_classes else factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise TypeError(f"{path!r} returned a {type(model).__name__}, not an nn.Module")
    if getattr(model, "stages", None) is None:
        model.stages = _default_stages(model)
    return model


def _default_stages(model: nn.Module) -> list[Stage]:
    """One stage per top-level child with an output width (any other module can still be measured by name)."""
    stages = []
    for name, child in model.named_children():
        channels = output_channels(child)
        if channels is None and stages:
            channels = stages[-1].channels  # a parameter-free child (pooling, activation) keeps the width
        if channels is not None:
            stages.append(Stage(name, channels, "stage"))
    return stages


def _check_stages(model: nn.Module, name: str) -> None:
    stages = getattr(model, "stages", None)
    if not stages:
        raise ValueError(f"model {name!r} describes no stages; set model.stages = [Stage(...), ...]")
    names = {n for n, _ in model.named_modules()}
    missing = [s.name for s in stages if s.name not in names]
    if missing:
        raise ValueError(
            f"model {name!r} lists stages that are not modules: {', '.join(missing)}; "
            "stage names are paths from model.named_modules()"
        )


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside DataParallel / DistributedDataParallel."""
    if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        return model.module
    return model
