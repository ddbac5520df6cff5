"""StaticDropout in training (paper Sec. 5.2, eq. 4).

It drops, in training, the channels of the pooled features before the classifier with
probabilities ``softmax(S)`` of their static scores ``S``, which are re-estimated every ``every``
steps from a batch and its frame-shuffled copy. With :func:`stdyn.training.fit` (or
``stdyn.training.zoo.get(..., callbacks=[...])``) pass ``StaticDropoutCallback(p=0.3)``. In your own
training loop it is one line plus a periodic refresh::

    model.head.dropout = sd = StaticDropout(0.3)
    for step, (clips, labels) in enumerate(loader):
        if step % sd.every == 0:
            refresh_static_scores(model, sd, clips, generator)  # or sd.update_scores(z1, z2)
        loss = criterion(model(clips), labels) ...
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from stdyn import training
from stdyn.core.estimator import PairStats
from stdyn.core.pairs import shuffle_batch_frames
from stdyn.core.probe import check_layers
from stdyn.models import prepare_input

RANK_BY = ("score", "margin")

def _pooled(features: Tensor) -> Tensor:
    """(B, C, ...) -> (B, C): the average over everything after the channel dimension."""
    return features.flatten(2).mean(2) if features.ndim > 2 else features


class StaticDropout(nn.Module):
    """Channel dropout guided by static scores (eq. 4), a drop-in for ``nn.Dropout``.

    In training, each sample loses ``k = round(p * C)`` of its C channels (dim 1 of (B, C, ...)),
    drawn without replacement with probabilities ``softmax(S / temperature)`` over the channels'
    static scores ``S`` (``temperature=1`` is the paper's eq. 4); until scores exist, ``S = 0``
    (uniform). Dead channels (NaN scores) count as the lowest score. The kept channels are scaled
    by ``C / (C - k)``, the same for every channel: the sum over channels keeps its expectation
    and the scale equals ``nn.Dropout``'s ``1 / (1 - p)``, so the two compare fairly. (Scaling
    each channel by ``1 / (1 - P(dropped))`` would instead amplify the static channels whenever
    they survive, working against the debiasing.) In eval mode it is the identity.

    ``static_scores`` is a buffer (saved in state dicts), set by :meth:`update_scores`; ``every``
    is how often (in steps) the scores should be refreshed, see :func:`refresh_static_scores`.
    """

    static_scores: Tensor

    def __init__(self, p: float = 0.5, every: int = 30, temperature: float = 1.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"StaticDropout probability p must lie in [0, 1), got {p}")
        if int(every) != every or every < 1:
            raise ValueError(f"every must be a positive number of steps, got {every}")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.p, self.every, self.temperature = float(p), int(every), float(temperature)
        # Sized on the first update (C is unknown until features arrive); empty means "no scores yet".
        self.register_buffer("static_scores", torch.empty(0))

    def extra_repr(self) -> str:
        return f"p={self.p}, every={self.every}, temperature={self.temperature}"

    def n_dropped(self, channels: int) -> int:
        """Channels dropped per sample: ``round(p * C)`` (halves up), at most ``C - 1``."""
        return min(math.floor(self.p * channels + 0.5), channels - 1)

    def drop_probabilities(self, channels: int | None = None) -> Tensor:
        """``softmax(S / temperature)`` over the channels (uniform before any scores), shape (C,)."""
        return torch.softmax(self._logits(channels), dim=0)

    def _logits(self, channels: int | None, device: torch.device | None = None) -> Tensor:
        scores = self.static_scores
        if scores.numel() == 0:
            if channels is None:
                raise ValueError("no static scores yet: pass the number of channels")
            return torch.zeros(channels, device=device or scores.device)
        if channels is not None and channels != scores.numel():
            raise ValueError(
                f"StaticDropout holds scores for {scores.numel()} channels but got features with "
                f"{channels} channels (dim 1 of (B, C, ...)); call update_scores with this layer's features"
            )
        scores = scores.float().to(device or scores.device)
        dead = torch.isnan(scores)
        if dead.any():
            lowest = scores[~dead].min() if (~dead).any() else scores.new_zeros(())
            scores = torch.where(dead, lowest, scores)
        return scores / self.temperature

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.ndim < 2:
            raise ValueError(f"StaticDropout expects features (B, C) or (B, C, ...), got shape {tuple(x.shape)}")
        batch, channels = x.shape[:2]
        k = self.n_dropped(channels)
        if k == 0:
            return x
        logits = self._logits(channels, x.device)
        # Gumbel-top-k: the k largest of log p_i + Gumbel noise are k draws without replacement
        # with probabilities p_i (sequential multinomial sampling), for every sample at once.
        gumbel = -torch.log(-torch.log(torch.rand(batch, channels, device=x.device)))
        dropped = (logits + gumbel).topk(k, dim=1).indices
        keep = torch.ones(batch, channels, dtype=x.dtype, device=x.device).scatter_(1, dropped, 0.0)
        keep = keep * (channels / (channels - k))
        return x * keep.view(batch, channels, *([1] * (x.ndim - 2)))

    @torch.no_grad()
    def update_scores(self, z1: Tensor, z2: Tensor) -> Tensor:
        """Set the static scores from features of a batch (``z1``) and of its frame-shuffled copy
        (``z2``), each (B, C) or (B, C, ...) (pooled over the trailing dims), with eq. 2.

        Under ``torch.distributed`` the statistics of all processes are merged, so every process
        must call it. Returns the scores (C,), NaN for dead channels.
        """
        z1, z2 = _pooled(z1.detach()), _pooled(z2.detach())
        if z1.ndim != 2 or z1.shape != z2.shape:
            raise ValueError(
                f"update_scores needs two feature batches of the same shape (B, C), got "
                f"{tuple(z1.shape)} and {tuple(z2.shape)}"
            )
        if len(z1) < 2:
            raise ValueError(f"update_scores needs at least 2 samples to estimate scores, got {len(z1)}")
        stats = PairStats(z1.shape[1])
        stats.update("static", z1, z2)
        stats.all_reduce()
        scores = torch.from_numpy(stats.factor_unit_scores("static")).to(torch.float32)
        self.static_scores = scores.to(z1.device)
        return self.static_scores

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any) -> None:
        saved = state_dict.get(prefix + "static_scores")
        if isinstance(saved, Tensor):  # take the saved size (the buffer is empty until scores exist)
            self.static_scores = torch.empty_like(saved, device=self.static_scores.device)
        super()._load_from_state_dict(state_dict, prefix, *args)


def _modes(model: nn.Module) -> dict[nn.Module, bool]:
    return {module: module.training for module in model.modules()}


@torch.no_grad()
def refresh_static_scores(model: nn.Module, module: StaticDropout, clips: Tensor,
                          generator: torch.Generator) -> Tensor:
    """Re-estimate ``module``'s static scores on a batch of clips (B, 3, T, H, W) in [0, 1].

    Runs ``model`` in eval mode on the clips and on a copy with each clip's frames shuffled
    (:func:`stdyn.core.pairs.shuffle_batch_frames` with ``generator``), keeps the features that enter
    ``module`` (the pooled (B, C) features when it is the model's ``head.dropout``), calls
    :meth:`StaticDropout.update_scores`, and gives every submodule back its train/eval mode.
    """
    if not any(m is module for m in model.modules()):
        raise ValueError("the StaticDropout module is not part of the model; install it first")
    features: list[Tensor] = []

    def keep_input(_: nn.Module, inputs: tuple[Any, ...]) -> None:
        features.append(_pooled(inputs[0].detach().float()))

    modes = _modes(model)
    handle = module.register_forward_pre_hook(keep_input)
    try:
        model.eval()
        model(prepare_input(model, clips))
        model(prepare_input(model, shuffle_batch_frames(clips, generator)))
    finally:
        handle.remove()
        for submodule, training in modes.items():
            submodule.training = training
    if len(features) != 2:
        raise RuntimeError(
            "the StaticDropout module did not run in the forward pass; install it on the path the model uses"
        )
    return module.update_scores(features[0], features[1])


def _replace(model: nn.Module, path: str, module: nn.Module) -> nn.Module:
    """Put ``module`` at ``path`` (a name from ``named_modules()``); return what was there."""
    (path,) = check_layers(model, [path])
    parent_name, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, child)
    setattr(parent, child, module)
    return old


class StaticDropoutCallback(training.Callback):
    """StaticDropout for :func:`stdyn.training.fit`, following the paper's recipe (Sec. 5.2).

    At the start it installs ``StaticDropout(p, every, temperature)`` at ``path`` (replacing the
    model's dropout there); every ``every`` steps it re-estimates the static scores from the batch
    and its frame-shuffled copy (shuffles seeded by ``(seed, step)``); in the fine-tuning phase
    (``TrainConfig.finetune_epochs``, low ``finetune_lr``) the dropout is removed (``nn.Identity``).
    """

    def __init__(self, p: float, every: int = 30, temperature: float = 1.0,
                 path: str = "head.dropout", seed: int = 0) -> None:
        StaticDropout(p, every, temperature)  # check the settings now
        self.p, self.every, self.temperature = float(p), int(every), float(temperature)
        self.path, self.seed = path, int(seed)
        self.refreshes = 0

    def on_build(self, model: nn.Module) -> StaticDropout:
        """Put a StaticDropout at ``path`` (keeping the scores of one already there) and return it.

        Also what a freshly built model needs before the weights of a run with this callback load.
        """
        module = StaticDropout(self.p, self.every, self.temperature)
        old = _replace(model, self.path, module)
        if isinstance(old, StaticDropout):
            module.static_scores = old.static_scores.clone()
        return module

    def on_fit_start(self, state: training.TrainState) -> None:
        self.on_build(state.model)

    def on_step(self, state: training.TrainState, clips: Tensor, labels: Tensor) -> None:
        if state.phase != "train" or state.step % self.every:
            return
        module = state.model.get_submodule(self.path)
        if not isinstance(module, StaticDropout):
            raise RuntimeError(
                f"{self.path!r} holds {type(module).__name__}, not the StaticDropout installed at the start"
            )
        generator = torch.Generator().manual_seed(training.derive_seed(self.seed, state.step, state.rank))
        refresh_static_scores(state.model, module, clips, generator)
        self.refreshes += 1

    def on_phase_change(self, model: nn.Module) -> None:
        _replace(model, self.path, nn.Identity())

    def state_dict(self) -> dict[str, Any]:
        # The scores are a buffer of the model, saved with its weights.
        return {"refreshes": self.refreshes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.refreshes = int(state["refreshes"])

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "p": self.p, "every": self.every, "temperature": self.temperature,
                "path": self.path, "seed": self.seed}
