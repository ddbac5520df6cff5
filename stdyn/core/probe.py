"""Where in the network: hooks that pool named layers, and ``measure``, the whole pipeline.

``measure(model, clips, layers)`` builds static and dynamic pairs from every clip, runs one
forward pass per pair member, pools each named layer's output to one vector per clip, and
streams the vectors into :class:`~stdyn.core.estimator.PairStats`. Nothing per clip is kept, so
memory does not grow with the number of clips, and under ``torch.distributed`` each process
measures its own share of the clips before the statistics are merged.
"""
from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from stdyn.core.estimator import FACTORS, LayerwiseResult, PairStats, UnitwiseResult
from stdyn.core.pairs import FramePairs, TwoStreamPairs

# How pooled dimensions are laid out, by name; inferred from the number of dimensions if absent.
POOL_DIMS = {"BCTHW": (2, 3, 4), "BCHW": (2, 3), "BNC": (1,), "BTHWC": (1, 2, 3), "BHWC": (1, 2), "BC": ()}
DEFAULT_LAYOUT = {5: "BCTHW", 4: "BCHW", 3: "BNC", 2: "BC"}
PAIR_BUILDERS = {"frames": FramePairs, "two_stream": TwoStreamPairs}


def select_output(output: Any, select: int | str | None = None, *, name: str = "") -> Any:
    """The tensor to measure in a layer's output: the output itself, element ``select`` of a tuple,
    list or dict, or its only tensor element. Never a guess among several tensors."""
    if not isinstance(output, (tuple, list, dict)):
        if select is not None:
            raise ValueError(f"layer {name!r} returns one {type(output).__name__}; drop its output selector")
        return output
    items = list(output.items()) if isinstance(output, dict) else list(enumerate(output))
    if select is not None:
        keys = [key for key, _ in items]
        if select not in keys:
            raise KeyError(f"layer {name!r} output has no element {select!r}; its elements are {keys}")
        return output[select]
    tensors = [(key, value) for key, value in items if isinstance(value, torch.Tensor)]
    if len(tensors) == 1:  # e.g. blocks returning (tokens, (T, H, W))
        return tensors[0][1]
    if not tensors:
        return output  # no tensor at all: pool() says so
    shapes = ", ".join(f"{key!r}: {tuple(value.shape)}" for key, value in tensors)
    raise ValueError(f"layer {name!r} returns a {type(output).__name__} with {len(tensors)} tensors ({shapes}); "
                     f"say which one to measure with outputs={{{name!r}: <index or key>}}")


def pool(output: Any, layout: str | None = None, *, name: str = "", select: int | str | None = None) -> torch.Tensor:
    """Global-average-pool a layer output (or its element ``select``, :func:`select_output`) to
    (B, C) float32 (tokens: mean over tokens)."""
    output = select_output(output, select, name=name)
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"layer {name!r} returned {type(output).__name__}, not a tensor; probe another layer")
    layout = layout or DEFAULT_LAYOUT.get(output.ndim)
    if layout not in POOL_DIMS or len(layout) != output.ndim:
        raise ValueError(
            f"layer {name!r} output has shape {tuple(output.shape)}; expected one of "
            f"(B, C, T, H, W), (B, C, H, W), tokens (B, N, C) or (B, C), or pass its layout "
            f"(one of {sorted(POOL_DIMS)}) in layouts={{{name!r}: ...}}"
        )
    dims = POOL_DIMS[layout]
    return output.float().mean(dim=dims) if dims else output.float()


def check_layers(model: nn.Module, layers: Iterable[str]) -> list[str]:
    """Return ``layers`` as a list, or raise naming unknown ones with close matches."""
    layers = [layers] if isinstance(layers, str) else list(layers)
    names = [n for n, _ in model.named_modules() if n]
    unknown = [layer for layer in layers if layer not in names]
    if unknown:
        hints = []
        for layer in unknown:
            close = difflib.get_close_matches(layer, names, n=3, cutoff=0.5)
            hints.append(f"{layer!r}" + (f" (did you mean {', '.join(map(repr, close))}?)" if close else ""))
        shown = ", ".join(names[:60]) + (f", ... ({len(names) - 60} more)" if len(names) > 60 else "")
        raise KeyError(f"unknown layer {'; '.join(hints)}. Available layers: {shown}")
    if not layers:
        raise ValueError("no layers given to measure")
    return layers


def default_layers(model: nn.Module) -> list[str]:
    """The model's declared stages (``model.stages``), or an error saying how to choose layers."""
    stages = getattr(model, "stages", None)
    if not stages:
        names = [n for n, _ in model.named_modules() if n and "." not in n]
        raise ValueError(f"this model declares no stages; pass layers=[...], e.g. from {names}")
    return [stage.name for stage in stages]


class Probe:
    """Forward hooks on named modules that keep each one's pooled (B, C) output.

    Use as a context manager; calling it runs the model and returns ``{layer: (B, C)}``.
    """

    def __init__(self, model: nn.Module, layers: Iterable[str], layouts: Mapping[str, str] | None = None,
                 outputs: Mapping[str, int | str] | None = None):
        self.model = model
        self.layers = check_layers(model, layers)
        self.layouts = dict(layouts or {})
        self.outputs = dict(outputs or {})  # per layer: which element of a tuple or dict output
        self.features: dict[str, torch.Tensor] = {}
        self._handles: list[Any] = []

    def __enter__(self) -> Probe:
        modules = dict(self.model.named_modules())
        for layer in self.layers:
            self._handles.append(modules[layer].register_forward_hook(self._hook(layer)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, layer: str) -> Callable[..., None]:
        def keep(module: nn.Module, inputs: Any, output: Any) -> None:
            self.features[layer] = pool(output, self.layouts.get(layer), name=layer,
                                        select=self.outputs.get(layer)).detach()
        return keep

    @torch.inference_mode()
    def __call__(self, inputs: Any) -> dict[str, torch.Tensor]:
        self.features = {}
        self.model(inputs)
        missing = [layer for layer in self.layers if layer not in self.features]
        if missing:
            raise RuntimeError(f"layers {missing} were not called in the forward pass; probe layers that run")
        return self.features


def _layouts_from_stages(model: nn.Module) -> dict[str, str]:
    return {s.name: s.layout for s in getattr(model, "stages", []) if getattr(s, "layout", None)}


class _Indexed(torch.utils.data.Dataset):
    """Items of a clip sequence with their index, keeping only the inputs the pairs need."""

    def __init__(self, clips: Sequence[Any] | torch.utils.data.Dataset, indices: Sequence[int], n_inputs: int):
        self.clips, self.indices, self.n_inputs = clips, list(indices), n_inputs

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[int, Any]:
        index = self.indices[i]
        item = self.clips[index]
        if isinstance(item, (tuple, list)):
            item = item[0] if self.n_inputs == 1 else tuple(item[: self.n_inputs])
        return index, item


def _check_clips(batch: Any, n_inputs: int, indices: Sequence[int]) -> Any:
    """The batch with float clips as float32; a clear error unless it holds clips (frames for
    two-stream pairs) of finite values in [0, 1]. ``indices`` name the clips in messages."""
    first = batch if n_inputs == 1 else batch[0]
    if n_inputs == 1:
        ndims, channel_dim, expected = (5, 6), -4, "(3, T, H, W) (or pre-stylized (S, 3, T, H, W))"
    else:
        ndims, channel_dim, expected = (4,), -3, "(3, H, W)"
    if not isinstance(first, torch.Tensor) or first.ndim not in ndims or first.shape[channel_dim] != 3:
        shape = tuple(first.shape[1:]) if isinstance(first, torch.Tensor) else type(first).__name__
        raise ValueError(f"expected each clip shaped {expected} with values in [0, 1], got {shape}")
    where = f"clips {list(indices)[0]}-{list(indices)[-1]}"
    if not first.is_floating_point():
        raise ValueError(f"{where}: expected float clips in [0, 1], got {first.dtype}; convert with "
                         "clip.float() / 255 for 8-bit frames")
    if not bool(torch.isfinite(first).all()):
        bad = [i for i, clip in zip(indices, first) if not bool(torch.isfinite(clip).all())]
        raise ValueError(f"clip(s) {bad} hold NaN or infinite values; fix or drop them before measuring")
    low, high = float(first.min()), float(first.max())
    if low < -1e-3 or high > 1 + 1e-3:
        hint = ("they look like 0-255 pixel values: divide by 255" if low >= 0 and high <= 255
                else "pass unnormalised clips (stdyn models normalise inside)")
        raise ValueError(f"{where}: expected clip values in [0, 1], got range [{low:.3g}, {high:.3g}]; {hint}")
    if first.dtype != torch.float32:  # float64 or float16 clips: the models' weights are float32
        return first.float() if n_inputs == 1 else (first.float(), *batch[1:])
    return batch


def _batches(loader: torch.utils.data.DataLoader) -> Iterator[Any]:
    """The loader's batches; clips of different shapes get an error that says so."""
    iterator = iter(loader)
    while True:
        try:
            yield next(iterator)
        except StopIteration:
            return
        except RuntimeError as error:
            if "stack expects each tensor to be equal size" not in str(error):
                raise
            raise ValueError(f"the clips differ in shape ({error}); resize them to one shape (3, T, H, W) before "
                             "measuring") from None


def measure(model: nn.Module, clips: Sequence[Any] | torch.utils.data.Dataset,
            layers: str | Iterable[str] | None = None, *, pairs: str | Any = "frames",
            batch_size: int = 8, seed: int = 0, device: str | torch.device = "cpu",
            bootstrap: int = 0, layouts: Mapping[str, str] | None = None, outputs: Mapping[str, int | str] | None = None,
            num_workers: int = 0, progress: bool = True) -> Measurement:
    """Measure static and dynamic information in ``layers`` of ``model`` over ``clips``.

    ``clips`` is any sequence or Dataset of (3, T, H, W) tensors in [0, 1] (or tuples whose first
    item is one). ``pairs`` is ``"frames"`` (shuffled frames vs restyled clips), ``"two_stream"``
    (items ``(frame, flow, ...)``; flow jitter vs restyled frame) or an object with the same
    ``make`` method. ``layers`` defaults to the model's declared stages. ``bootstrap=R`` keeps R
    Poisson-bootstrap replicates over clips for confidence intervals (2 or more for an interval).
    A layer returning a tuple, list or dict with more than one tensor needs ``outputs={layer: index
    or key}`` saying which to measure. The model is moved to ``device`` and put in eval mode.
    """
    builder = PAIR_BUILDERS[pairs]() if isinstance(pairs, str) and pairs in PAIR_BUILDERS else pairs
    if isinstance(builder, str) or not hasattr(builder, "make"):
        raise ValueError(f"unknown pairs {pairs!r}; use one of {sorted(PAIR_BUILDERS)} or a builder with .make()")
    n_inputs = 2 if isinstance(builder, TwoStreamPairs) else getattr(builder, "inputs_per_sample", 1)
    layers = check_layers(model, layers if layers is not None else default_layers(model))
    if len(clips) < 2:
        raise ValueError(f"need at least 2 clips to measure (one static and one dynamic pair each), got {len(clips)}")
    layouts = {**_layouts_from_stages(model), **(layouts or {})}
    model.to(device).eval()
    pack = getattr(model, "pack_input", None)

    rank, world = 0, 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    if len(clips) < world:  # a process without clips would never join the others' all_reduce
        raise ValueError(f"{len(clips)} clips cannot be shared by {world} processes; measure at least one clip "
                         "per process, or run fewer processes")
    indexed = _Indexed(clips, range(rank, len(clips), world), n_inputs)
    loader = torch.utils.data.DataLoader(indexed, batch_size=batch_size, num_workers=num_workers)

    stats: dict[str, PairStats] = {}
    with Probe(model, layers, layouts, outputs) as probe:
        for indices, batch in tqdm(_batches(loader), desc="measuring", unit="batch", disable=not progress):
            indices = indices.tolist()
            batch = _check_clips(batch, n_inputs, indices)
            for factor in FACTORS:
                inputs = builder.make(batch, indices, factor, seed, pack)
                first, second = (_to(x, device) for x in inputs)
                z1 = probe(first)
                z2 = probe(second)
                for layer in layers:
                    if layer not in stats:
                        stats[layer] = PairStats(z1[layer].shape[1], bootstrap=bootstrap, seed=seed, name=layer)
                    stats[layer].update(factor, z1[layer], z2[layer], ids=indices)
    for layer_stats in stats.values():
        layer_stats.all_reduce()
    return Measurement({layer: stats[layer] for layer in layers})


def _to(x: Any, device: str | torch.device) -> Any:
    if isinstance(x, (list, tuple)):
        return [t.to(device) for t in x]
    return x.to(device)


class Measurement:
    """The statistics of every measured layer, with layer-wise and unit-wise results."""

    def __init__(self, stats: Mapping[str, PairStats]):
        self.stats = dict(stats)

    @property
    def layers(self) -> list[str]:
        return list(self.stats)

    def _get(self, layer: str) -> PairStats:
        if layer not in self.stats:
            raise KeyError(f"layer {layer!r} was not measured; measured layers: {self.layers}")
        return self.stats[layer]

    def layerwise(self, layer: str, method: str = "normalized") -> LayerwiseResult:
        """Layer-wise result (eq. 1) of one measured layer."""
        return self._get(layer).layerwise(method)

    def unitwise(self, layer: str, threshold: float = 0.5) -> UnitwiseResult:
        """Unit-wise result (eqs. 2-3) of one measured layer."""
        return self._get(layer).unitwise(threshold)

    def to_frame(self, method: str = "normalized", level: float = 0.95) -> pd.DataFrame:
        """Tidy layer-wise table: one row per (layer, factor), layers in measured order."""
        frame = pd.concat([self.layerwise(layer, method).to_frame(level) for layer in self.layers], ignore_index=True)
        frame.insert(1, "depth", frame["layer"].map({layer: i for i, layer in enumerate(self.layers)}))
        return frame

    def units_frame(self, threshold: float = 0.5, level: float = 0.95) -> pd.DataFrame:
        """Tidy unit-wise table: one row per (layer, category) with counts and percents."""
        frame = pd.concat([self.unitwise(layer, threshold).summary(level) for layer in self.layers], ignore_index=True)
        frame.insert(1, "depth", frame["layer"].map({layer: i for i, layer in enumerate(self.layers)}))
        return frame

    def state_dict(self) -> dict[str, Any]:
        return {layer: s.state_dict() for layer, s in self.stats.items()}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> Measurement:
        return cls({layer: PairStats.from_state_dict(s) for layer, s in state.items()})

    def save(self, path: str | Path) -> None:
        """Write the statistics (atomically, with a checksum)."""
        from stdyn.data.cache import save_tensors

        save_tensors(Path(path), self.state_dict())

    @classmethod
    def load(cls, path: str | Path) -> Measurement:
        from stdyn.data.cache import load_tensors

        state = load_tensors(Path(path))
        if state is None:
            raise FileNotFoundError(f"no intact measurement at {path}")
        return cls.from_state_dict(state)

    def __repr__(self) -> str:
        return f"Measurement(layers={self.layers}, pairs={next(iter(self.stats.values())).n_pairs})"
