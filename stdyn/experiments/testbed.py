"""Validation of the testbed, before any claim is read from it.

The worlds stand in for natural video only if models trained on them behave as the paper's
models do in the respects the method relies on: a dynamic pair shows one clip in two styles, so a
model must recognise a clip across a change of style; a world's single frames must reveal the
class where the real dataset's do (``kinetics``) and not where they do not (``ssv2``); and a model
that sees no frame order (C2D) must not solve ssv2. These checks come first in the book; a claim
measured on a testbed that fails them says nothing about the paper.

>>> frames = single_frame_accuracy("kinetics", "quick")   # top-1 of a one-frame classifier, per style
>>> bed = validate("quick")   # bed.checks, bed.models, bed.ok, bed.dynamics_ok
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from torch import Tensor
from torch.utils.data import Dataset

from stdyn import experiments
from stdyn.core import stylize
from stdyn.data.cache import cache_dir, config_key, load_tensors, save_tensors
from stdyn.training import TrainConfig, derive_seed, evaluate, fit, loop, profiles, zoo

FRAMES_PER_CLIP = 2  # frames of each training clip the single-frame classifier learns from


class _Frames(Dataset):
    """Single frames (3, 1, H, W) of a clip dataset: ``per_clip`` evenly spaced frames per clip."""

    def __init__(self, clips: Dataset, per_clip: int) -> None:
        self.clips, self.per_clip = clips, per_clip

    def __len__(self) -> int:
        return len(self.clips) * self.per_clip  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        clip, label = self.clips[index // self.per_clip][:2]
        frames = clip.shape[1]
        positions = np.linspace(0, frames - 1, self.per_clip + 2)[1:-1]
        t = int(round(positions[index % self.per_clip]))
        return clip[:, t:t + 1], int(label)


def single_frame_accuracy(world: str, profile: str | profiles.Profile = "quick", *, seed: int = 0,
                          styles: Sequence[str] | None = None, epochs: int | None = None,
                          world_kwargs: dict[str, Any] | None = None, progress: bool = False) -> pd.Series:
    """Top-1 of a single-frame classifier (C2D on one frame) trained with the profile's recipe on
    unstyled frames of ``world``'s training clips, scored on the middle frame of its held-out
    clips, as they are ("original") and in each measurement style: how much of the class one
    frame reveals, and whether that survives a change of style. Cached by configuration and code."""
    from stdyn import models
    from stdyn.data import worlds
    from stdyn.training import augment

    prof = profiles.get(profile)
    styles = list(styles or stylize.STYLES)
    key = config_key({"world": world, "profile": asdict(prof), "seed": seed, "styles": styles, "epochs": epochs,
                      "frames_per_clip": FRAMES_PER_CLIP,
                      "world_kwargs": world_kwargs}, models, loop, augment, *worlds.code_modules(world), stylize,
                     _Frames, experiments.Styled)
    path = cache_dir("testbed") / f"single-frame-{world}-{prof.name}-{key}.pt"
    cached = load_tensors(path)
    if cached is not None:
        return pd.Series(cached["accuracy"], name=f"{world}: single-frame top-1")
    train_clips, val_clips = zoo.datasets(world, prof, world_kwargs=world_kwargs, progress=progress)
    classes = list(train_clips.classes)  # type: ignore[attr-defined]
    model = models.create("c2d", len(classes), seed=seed, **prof.kwargs_for("c2d"))
    config = TrainConfig.from_profile(prof, epochs=epochs or prof.epochs, seed=derive_seed(seed, "single-frame"))
    fit(model, _Frames(train_clips, FRAMES_PER_CLIP), None, config, progress=progress)
    views = {"original": val_clips, **{style: experiments.Styled(val_clips, style) for style in styles}}
    accuracy = {name: evaluate(model, _Frames(view, 1), batch_size=prof.measure_batch_size, device=config.device)
                for name, view in views.items()}
    save_tensors(path, {"accuracy": accuracy})
    return pd.Series(accuracy, name=f"{world}: single-frame top-1")


@dataclass(frozen=True)
class Check:
    """One testbed check: what is required, what was measured, and whether it holds."""

    check: str
    subject: str
    required: str
    measured: str
    passed: bool

    def row(self) -> dict[str, Any]:
        return {"check": self.check, "subject": self.subject, "required": self.required,
                "measured": self.measured, "passed": self.passed}


def checks_frame(checks: Sequence[Check]) -> pd.DataFrame:
    """The checks as a tidy table, one row each."""
    return pd.DataFrame([check.row() for check in checks],
                        columns=["check", "subject", "required", "measured", "passed"])


def at_most(value: float, bound: float) -> bool:
    return bool(np.isfinite(value) and value <= bound)


def at_least(value: float, bound: float) -> bool:
    return bool(np.isfinite(value) and value >= bound)


TEMPORAL_MODELS = ("slowonly", "slowfast", "i3d")  # the models whose dynamics the checks read
MIN_CLEAN_TOP1 = 0.85
MIN_STYLE_RETENTION = 0.6  # mean top-1 over the styles, as a share of clean top-1
MAX_ORDERLESS_TOP1 = 0.55  # C2D on ssv2 (no frame order: at most about half)
SINGLE_FRAME = {"kinetics": (0.5, 0.4)}  # least clean and mean-over-styles single-frame top-1
SINGLE_FRAME_CHANCE_FACTOR, SINGLE_FRAME_SLACK = 2.0, 0.05  # ssv2: at most 2 x chance + 0.05


def competence_bar(chance: float, best: float) -> float:
    """The least clean top-1 at which a model counts as competent on a world: halfway between
    chance and the best model's top-1 there."""
    return chance + 0.5 * (best - chance)


@dataclass
class Testbed:
    """The outcome of :func:`validate`: one row per check, and per-model figures."""

    checks: pd.DataFrame  # check, subject, required, measured, passed
    models: pd.DataFrame  # model, world, clean, each style, style_mean, retention, dynamic units

    @property
    def ok(self) -> bool:
        """Whether every check passed."""
        return bool(self.checks["passed"].all())

    @property
    def dynamics_ok(self) -> bool:
        """Whether the checks that dynamic measurements rest on passed (style retention and
        dynamic units of the temporal models): without them no verdict about dynamics means
        anything."""
        rows = self.checks[self.checks["check"].isin(["style retention", "dynamic units"])]
        return bool(len(rows)) and bool(rows["passed"].all())

    def banner(self) -> Any:
        """A short verdict on the testbed for the top of a chapter (Markdown)."""
        from IPython.display import Markdown

        if self.ok:
            return Markdown("**Testbed: every check passed** (chapter 0).")
        text = "**Testbed: failed** (" + "; ".join(self.failures()) + ")."
        if not self.dynamics_ok:
            text += (" Without style retention and dynamic units in the temporal models, verdicts about "
                     "dynamics read *not tested*: the numbers are shown, not judged.")
        return Markdown(text)

    def styled_checks(self) -> Any:
        """The checks as a table, passed rows green and failed rows red."""
        colours = {True: "background-color: #d9f2d9", False: "background-color: #f8d7d3"}
        return self.checks.style.map(lambda v: colours.get(v, "") if isinstance(v, bool) else "",
                                     subset=["passed"]).hide(axis="index")

    def failures(self) -> list[str]:
        """Each failed check as one line."""
        failed = self.checks[~self.checks["passed"]]
        return [f"{r.check} of {r.subject}: {r.measured} (required {r.required})" for r in failed.itertuples()]


def model_figures(models: Sequence[str], world: str, profile: str | profiles.Profile = "quick", *, seed: int = 0,
                  device: str | None = None, progress: bool = False) -> pd.DataFrame:
    """Clean and per-style top-1 and the dynamic units at every last stage (with their 95%
    interval) of each zoo model on ``world``, one row per model and last stage."""
    prof = profiles.get(profile)
    entries = zoo.get_many([dict(model=model, world=world, profile=prof, seed=seed, device=device) for model in models],
                           progress=progress)
    rows = []
    for model, entry in zip(models, entries):
        styled = experiments.entry_style_accuracy(entry, world, prof) / 100
        measurement = experiments.measure_entry(entry, world, prof, layers=experiments.last_layers(entry.model),
                                                seed=seed, progress=progress)
        for layer in measurement.layers:
            dynamic = measurement.unitwise(layer).percent("dynamic")
            lo, hi = dynamic.interval()
            rows.append({"model": model, "world": world, "layer": layer, "clean": styled["original"],
                         **styled.drop("original").to_dict(), "style_mean": styled.drop("original").mean(),
                         "retention": styled.drop("original").mean() / max(styled["original"], 1e-9),
                         "dynamic_units": dynamic.value, "dynamic_lo": lo, "dynamic_hi": hi})
    return pd.DataFrame(rows)


def validate(profile: str | profiles.Profile = "quick", *, models: Sequence[str] = TEMPORAL_MODELS,
             orderless: str | None = "c2d", world: str = "ssv2", single_frame_worlds: Sequence[str] = ("kinetics", "ssv2"),
             seed: int = 0, device: str | None = None, progress: bool = False) -> Testbed:
    """Run the testbed checks at ``profile``: on ``world``, each temporal model reaches
    :data:`MIN_CLEAN_TOP1`, keeps :data:`MIN_STYLE_RETENTION` of it on the styles and has dynamic
    units at its last stage(s) with the interval above zero; the ``orderless`` model stays at or
    below :data:`MAX_ORDERLESS_TOP1`; a single-frame classifier reads the class from frames of
    ``kinetics`` (clean and styled) and not from frames of ``ssv2``."""
    figures = model_figures([*models, *([orderless] if orderless else [])], world, profile, seed=seed,
                            device=device, progress=progress)
    checks: list[Check] = []
    for model in models:
        rows = figures[figures["model"] == model]
        first = rows.iloc[0]
        checks.append(Check("clean top-1", f"{model} on {world}", f">= {MIN_CLEAN_TOP1:.2f}",
                            f"{first.clean:.3f}", at_least(first.clean, MIN_CLEAN_TOP1)))
        checks.append(Check("style retention", f"{model} on {world}", f">= {MIN_STYLE_RETENTION:.2f} of clean",
                            f"{first.retention:.2f} ({first.style_mean:.3f} / {first.clean:.3f})",
                            at_least(first.retention, MIN_STYLE_RETENTION)))
        # A model with two pathways (SlowFast) ends in two last stages, both read by its head:
        # it passes when either has dynamic units; the table shows both.
        checks.append(Check("dynamic units", f"{model} on {world}, last stage",
                            "interval above 0%" + (" in either pathway" if len(rows) > 1 else ""),
                            "; ".join(f"{row.layer} {row.dynamic_units:.1f}% [{row.dynamic_lo:.1f}, {row.dynamic_hi:.1f}]"
                                      for row in rows.itertuples()),
                            bool((rows["dynamic_lo"] > 0).any())))
    if orderless:
        clean = float(figures.loc[figures["model"] == orderless, "clean"].iloc[0])
        checks.append(Check("no order, no ssv2", f"{orderless} on {world}", f"<= {MAX_ORDERLESS_TOP1:.2f}",
                            f"{clean:.3f}", at_most(clean, MAX_ORDERLESS_TOP1)))
    for frame_world in single_frame_worlds:
        accuracy = single_frame_accuracy(frame_world, profile, seed=seed, progress=progress)
        styled = float(accuracy.drop("original").mean())
        if frame_world in SINGLE_FRAME:
            clean_bar, style_bar = SINGLE_FRAME[frame_world]
            checks.append(Check("single frame reveals the class", f"{frame_world}, clean", f">= {clean_bar:.2f}",
                                f"{accuracy['original']:.3f}", at_least(accuracy["original"], clean_bar)))
            checks.append(Check("single frame reveals the class", f"{frame_world}, styles", f">= {style_bar:.2f}",
                                f"{styled:.3f}", at_least(styled, style_bar)))
        else:
            from stdyn.data import worlds

            chance = 1.0 / len(worlds.spec(frame_world).classes)
            bar = SINGLE_FRAME_CHANCE_FACTOR * chance + SINGLE_FRAME_SLACK
            checks.append(Check("single frame hides the class", f"{frame_world}, clean", f"<= {bar:.2f}",
                                f"{accuracy['original']:.3f}", at_most(accuracy["original"], bar)))
    return Testbed(checks_frame(checks), figures)
