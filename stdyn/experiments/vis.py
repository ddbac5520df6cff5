"""VIS studies: VisTR-like models from the zoo, scored by video mask AP and measured on stylized ``davis``.

>>> study = vis_study({"VisTR R50": ("vistr_r50", "ytvis"), "VisTR R101": ("vistr_r101", "ytvis")}, "quick")
>>> study.scores                      # mask AP, AP50, AP75 clean and in each style, with intervals
>>> study.layers()                    # layer-wise dynamic and static percent of every encoder/decoder layer
>>> vis_testbed(study).banner()       # above constant tracks? does restyling leave the model working?

Each model (a label for a zoo model name and the VIS world it trains on) is scored on the
held-out clips of its training world, clean and in each measurement style, against the best
constant tracks fitted on its training masks; and measured, as the paper measures VisTR on
stylized DAVIS16, on the held-out clips of the ``davis`` world with frame pairs (shuffled frames
vs restyled clips).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from stdyn.core import claims, stylize
from stdyn.core.estimator import Estimate
from stdyn.core.probe import Measurement
from stdyn.data.cache import config_key, load_tensors, save_tensors
from stdyn.experiments.surveys import BOOTSTRAP, measure_entry, stage_labels
from stdyn.experiments.testbed import MIN_STYLE_RETENTION, Check, Testbed, at_least, checks_frame
from stdyn.tasks import VIS, instances
from stdyn.tasks.vis import VisClips, split_outputs
from stdyn.training import profiles, zoo

TRAIN_WORLD, MEASURE_WORLD, ORIGINAL = "ytvis", "davis", "original"
# Paper Fig. 5: VisTR with a ResNet-50 and a ResNet-101 backbone, trained on YouTube-VIS.
BACKBONES: dict[str, tuple[str, str]] = {"VisTR R50": ("vistr_r50", TRAIN_WORLD), "VisTR R101": ("vistr_r101", TRAIN_WORLD)}
# Paper Fig. 9 (table): VisTR R50 trained on YouTube-VIS and on OVIS.
DATASETS: dict[str, tuple[str, str]] = {"ytvis": ("vistr_r50", "ytvis"), "ovis": ("vistr_r50", "ovis")}
# The VIS testbed: mask AP above the best constant tracks, and kept on restyled clips.
MIN_AP_MARGIN = 0.1


def predict_clips(model: nn.Module, clips: VisClips, *, style: str = ORIGINAL, batch_size: int = 16,
                  device: str | torch.device = "cpu") -> list[dict[str, Any]]:
    """Each clip's predicted tracks (:func:`~stdyn.tasks.instances.clip_predictions`, scored by class
    probability times mask quality), the clips restyled in ``style`` first unless it is ``"original"``."""
    loader = torch.utils.data.DataLoader(clips, batch_size=batch_size)
    model.to(device).eval()
    predictions: list[dict[str, Any]] = []
    with torch.no_grad():
        for clip, masks, _, _ in loader:
            if style != ORIGINAL:
                clip = stylize.stylize(clip, style)
            class_logits, mask_logits = split_outputs(model(clip.to(device)).float().cpu(), masks)
            predictions += instances.clip_predictions(class_logits, mask_logits, mask_quality=True)
    return predictions


def ground_truth(clips: VisClips) -> list[dict[str, np.ndarray]]:
    """Each clip's real instances: ``masks`` (G, T, H, W) bool and ``labels`` (G,)."""
    world = clips.world
    truths = []
    for i in range(len(world)):
        present = world.classes[i] >= 0
        truths.append({"masks": world.masks[i][present].numpy() > 0, "labels": world.classes[i][present].numpy()})
    return truths


def ap_estimate(predictions: Sequence[dict[str, Any]], truths: Sequence[dict[str, Any]], *, replicates: int,
                seed: int = 0) -> dict[str, Any]:
    """Mask AP (and AP50, AP75) over the clips, with bootstrap replicates of AP over clips (paired
    across models scored on the same clips with the same ``seed``)."""
    evaluations = instances.evaluate_clips(list(predictions), list(truths))  # IoUs and matches, once

    def ap(rows: np.ndarray) -> float:
        return instances.accumulate([evaluations[i] for i in rows]).ap

    whole = instances.accumulate(evaluations)
    estimate = claims.bootstrap(ap, len(truths), replicates=replicates, seed=seed)
    return {"AP": whole.ap, "AP50": whole.ap50, "AP75": whole.ap75, "replicates": estimate.replicates}


def _scores(entry: zoo.ZooEntry, world: str, clips: VisClips, prof: profiles.Profile, *, style: str,
            replicates: int, seed: int) -> dict[str, Any]:
    """AP of one entry on one world in one style, cached beside the entry."""
    key = config_key({"world": world, "style": style, "data": VIS.data_sizes(prof, 0), "n": len(clips),
                      "replicates": replicates, "seed": seed}, predict_clips, instances)
    path = entry.run_dir / f"instance-scores-{key}.pt"
    cached = load_tensors(path)
    if cached is not None:
        return cached
    scores = ap_estimate(predict_clips(entry.model, clips, style=style, device=entry.device), ground_truth(clips),
                         replicates=replicates, seed=seed)
    save_tensors(path, scores)
    return scores


@dataclass
class VisStudy:
    """Trained VIS models, their mask AP and their measurements on stylized ``davis``."""

    profile: str
    entries: dict[str, zoo.ZooEntry]  # label -> entry
    measurements: dict[str, Measurement]  # label -> measurement on held-out davis
    scores: pd.DataFrame  # model, world, style, AP, AP50, AP75, AP_lo, AP_hi
    baselines: pd.DataFrame  # world, baseline, AP, AP50, AP75 (the best constant tracks)
    estimates: dict[tuple[str, str, str], Estimate] = field(default_factory=dict)  # (label, world, style) -> AP
    labels: list[str] = field(default_factory=list)

    def ap(self, label: str, world: str | None = None, style: str = ORIGINAL) -> Estimate:
        """A model's mask AP on the held-out clips of ``world`` (default: its training world)."""
        world = world or self.entries[label].config["world"]
        if (label, world, style) not in self.estimates:
            raise KeyError(f"no mask AP for {label!r} on {world!r} in style {style!r}; scored: {sorted(self.estimates)}")
        return self.estimates[label, world, style]

    def baseline(self, world: str) -> float:
        """The best constant tracks' mask AP on ``world``."""
        return float(self.baselines.query("world == @world")["AP"].max())

    def retention(self, label: str, world: str | None = None) -> pd.Series:
        """A model's mask AP in each style, clean, and the mean over styles as a share of clean."""
        styled = {style: self.ap(label, world, style).value for style in stylize.STYLES}
        clean = self.ap(label, world).value
        return pd.Series({"clean": clean, **styled, "retention": np.mean(list(styled.values())) / clean
                          if clean > 0 else float("nan")}, name=label)

    def ap_table(self) -> pd.DataFrame:
        """Every model's mask AP, AP50 and AP75 on its world, the constant tracks', and the mean AP
        over the styles with its share of clean."""
        rows = []
        for label in self.entries:
            world = self.entries[label].config["world"]
            clean = self.scores.query("model == @label and world == @world and style == @ORIGINAL").iloc[0]
            kept = self.retention(label, world) if self.has_styles(label) else None
            rows.append({"model": label, "trained on": world, "mask AP": clean["AP"],
                         "95% interval": f"[{clean['AP_lo']:.3f}, {clean['AP_hi']:.3f}]", "AP50": clean["AP50"],
                         "AP75": clean["AP75"], "constant tracks AP": self.baseline(world),
                         "AP, restyled (mean)": np.nan if kept is None else kept[list(stylize.STYLES)].mean(),
                         "retention": np.nan if kept is None else kept["retention"]})
        return pd.DataFrame(rows)

    def has_styles(self, label: str) -> bool:
        world = self.entries[label].config["world"]
        return all((label, world, style) in self.estimates for style in stylize.STYLES)

    def layers(self, level: float = 0.95) -> pd.DataFrame:
        """Layer-wise dynamic and static percent at every encoder and decoder layer."""
        parts = []
        for label in self.labels:
            measurement = self.measurements[label]
            frame = measurement.to_frame(level=level).merge(
                stage_labels(self.entries[label].model, measurement.layers), on="layer")
            frame.insert(0, "model", label)
            frame.insert(1, "series", label)
            parts.append(frame)
        frame = pd.concat(parts, ignore_index=True)
        for column in ("fraction", "fraction_lo", "fraction_hi"):
            frame[column.replace("fraction", "percent")] = 100 * frame[column]
        return frame

    def units(self, threshold: float = 0.5, level: float = 0.95) -> pd.DataFrame:
        """Unit-wise categories (percent, interval) at every encoder and decoder layer."""
        parts = []
        for label in self.labels:
            measurement = self.measurements[label]
            frame = measurement.units_frame(threshold, level).merge(
                stage_labels(self.entries[label].model, measurement.layers), on="layer")
            frame.insert(0, "model", label)
            frame.insert(1, "series", label)
            parts.append(frame)
        return pd.concat(parts, ignore_index=True)

    def layer_estimate(self, label: str, layer: str, factor: str) -> Estimate:
        """The layer-wise percent of ``factor`` ("dynamic" or "static") at ``layer``."""
        return self.measurements[label].layerwise(layer).percent(factor)

    def unit_estimate(self, label: str, layer: str, category: str, threshold: float = 0.5) -> Estimate:
        """The percent of ``category`` units at ``layer``."""
        return self.measurements[label].unitwise(layer, threshold).percent(category)

    def static_bias(self, label: str, layer: str) -> Estimate:
        """Static minus dynamic percent at ``layer`` (layer-wise, points)."""
        return self.layer_estimate(label, layer, "static") - self.layer_estimate(label, layer, "dynamic")

    def stage_names(self, label: str, kind: str | None = None) -> list[str]:
        """The measured layers of a model, or those of ``kind`` ("encoder" or "decoder"), in order."""
        stages = self.entries[label].model.stages
        return [stage.name for stage in stages if kind is None or stage.kind == kind]


def baseline_scores(train: VisClips, evaluations: Mapping[str, VisClips]) -> pd.DataFrame:
    """The best constant tracks (:func:`~stdyn.tasks.instances.constant_track_predictions`), fitted
    on the training masks and scored on each evaluation world."""
    rows = []
    for world, clips in evaluations.items():
        predictions = instances.constant_track_predictions(train.world.classes, train.world.masks, len(clips))
        result = instances.video_ap(predictions, ground_truth(clips))
        rows.append({"world": world, "baseline": "constant tracks", "AP": result.ap, "AP50": result.ap50,
                     "AP75": result.ap75})
    return pd.DataFrame(rows)


def vis_study(models: Mapping[str, tuple[str, str]], profile: str | profiles.Profile = "quick", *, seed: int = 0,
              measure: Sequence[str] | None = None, styles: bool = True, device: str | None = None,
              progress: bool = True) -> VisStudy:
    """Train (or load) ``models`` (label -> (zoo model name, VIS training world)), score each on the
    held-out clips of its world (clean and, with ``styles``, in each measurement style), and
    measure the labels in ``measure`` (default: all) on held-out ``davis``."""
    prof = profiles.get(profile)
    measured = list(models) if measure is None else list(measure)
    unknown = [label for label in measured if label not in models]
    if unknown:
        raise ValueError(f"cannot measure {unknown}: not among the study's models {list(models)}")
    entries = dict(zip(models, zoo.get_many([{"model": name, "world": world, "profile": prof, "seed": seed,
                                              "device": device} for name, world in models.values()],
                                            progress=progress)))
    measurements = {label: measure_entry(entries[label], MEASURE_WORLD, prof, seed=seed, progress=progress)
                    for label in measured}
    replicates = BOOTSTRAP.get(prof.name, 200)
    worlds = dict.fromkeys(world for _, world in models.values())
    held_out = {world: zoo.datasets(world, prof, progress=progress)[1] for world in worlds}
    rows, estimates = [], {}
    passes = [ORIGINAL, *(stylize.STYLES if styles else ())]
    for label, entry in tqdm(entries.items(), desc="scoring", disable=not progress):
        world = models[label][1]
        for style in passes:
            scores = _scores(entry, world, held_out[world], prof, style=style, replicates=replicates, seed=seed)
            estimate = Estimate(float(scores["AP"]), np.asarray(scores["replicates"], dtype=np.float64))
            estimates[label, world, style] = estimate
            lo, hi = estimate.interval()
            rows.append({"model": label, "world": world, "style": style, "AP": estimate.value,
                         "AP50": float(scores["AP50"]), "AP75": float(scores["AP75"]), "AP_lo": lo, "AP_hi": hi})
    baselines = pd.concat([baseline_scores(zoo.datasets(world, prof, progress=progress)[0], {world: clips})
                           for world, clips in held_out.items()], ignore_index=True)
    return VisStudy(prof.name, entries, measurements, pd.DataFrame(rows), baselines, estimates, measured)


def vis_testbed(study: VisStudy, labels: Sequence[str] | None = None) -> Testbed:
    """The VIS testbed on ``labels`` (default: every model of the study): mask AP clearly above the
    best constant tracks, and most of it kept on restyled clips (the dynamic pairs compare a clip
    in two styles, so a model that fails on them says nothing about dynamics)."""
    checks = []
    for label in labels or list(study.entries):
        world = study.entries[label].config["world"]
        clean, floor = study.ap(label).value, study.baseline(world)
        checks.append(Check("above constant tracks", f"{label}, held-out {world}", f">= {MIN_AP_MARGIN:.2f} AP above",
                            f"{clean:.3f} vs {floor:.3f}", at_least(clean - floor, MIN_AP_MARGIN)))
        if study.has_styles(label):
            kept = study.retention(label)
            checks.append(Check("style retention", f"{label}, restyled held-out {world}",
                                f">= {MIN_STYLE_RETENTION:.2f} of clean",
                                f"{kept['retention']:.2f} ({kept[list(stylize.STYLES)].mean():.3f} / {clean:.3f})",
                                at_least(kept["retention"], MIN_STYLE_RETENTION)))
    return Testbed(checks_frame(checks), study.ap_table())
