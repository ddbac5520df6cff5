"""The fusion and cross-connection study (paper Sec. 5.3, Fig. 15) and the AVOS testbed checks.

>>> study = fusion_study("quick")
>>> study.scores_table("moca")        # Fig. 15 bottom: mIoU and success rates, with and without flip
>>> study.units()                     # Fig. 15 top: unit-wise categories at every fusion layer
>>> study.testbed().banner()          # do both streams matter? is motion usable? does RGB restyling hurt?

Two-stream models train on ``davis+ytvos`` (frames of clips, SGD with the poly schedule), are
measured on held-out ``davis`` (restyled frames vs jittered flow, :class:`~stdyn.core.pairs.TwoStreamPairs`)
and scored on held-out ``davis`` and on ``moca``. The four combinations of cross connection (U:
motion-to-appearance, B: bidirectional) and fusion (G: gated, CCG: convex-combination gated)
share everything else, none with MATNet's boundary refinement, so that the comparison isolates
them; FusionSeg (no cross connections, concatenation at stages 2 and 5) is the static-biased
reference, and the same network on one stream only gives the single-stream baselines.
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
from stdyn.experiments.surveys import BOOTSTRAP, dynamic_ratio, measure_entry, stage_labels
from stdyn.experiments.testbed import Check, Testbed, at_least, checks_frame
from stdyn.tasks import VOS, segmentation
from stdyn.tasks.vos import VosClips, VosFrames
from stdyn.training import profiles, zoo

COMBINATIONS: dict[str, str] = {"U+G": "matnet_nobar", "U+CCG": "matnet_star", "B+G": "rtnet_star", "B+CCG": "rtnet"}
STUDY_MODELS: dict[str, str] = {"FusionSeg": "fusionseg", **COMBINATIONS}
SINGLE_STREAM: dict[str, str] = {"appearance only": "appearance_only", "motion only": "motion_only"}
TRAIN_WORLD, HELD_OUT, CAMOUFLAGE = "davis+ytvos", "davis", "moca"
ORIGINAL = "original"

# The AVOS testbed (chapter 07 reads no verdict when one fails).
BOTH_STREAMS_MARGIN = 0.05  # the two-stream model's held-out mIoU above each single stream's
MOTION_MARGIN = 0.15  # on moca, the best study model's mIoU above appearance only
MIN_RGB_RETENTION = 0.6  # mean mIoU over the RGB styles, as a share of clean mIoU
REFERENCE = "U+G"  # the two-stream model whose single-stream versions are the baselines


def frame_scores(model: nn.Module, clips: VosClips | Any, *, flip: bool = False, style: str = ORIGINAL,
                 batch_size: int = 64, device: str | torch.device = "cpu") -> pd.DataFrame:
    """Every frame of ``clips`` segmented by ``model``: one row per frame with its clip, mask IoU
    against the exact mask and box IoU by the MoCA protocol (:func:`~stdyn.tasks.segmentation.moca_box_scores`).

    ``flip`` averages the prediction with that of the mirrored inputs; ``style`` restyles the RGB
    frames (:data:`stdyn.core.stylize.STYLES`) and leaves the flow as it is.
    """
    frames = VosFrames(clips, exact=True)
    loader = torch.utils.data.DataLoader(frames, batch_size=batch_size)
    model.to(device).eval()
    probabilities, masks = [], []
    with torch.no_grad():
        for rgb, flow_image, mask in loader:
            if style != ORIGINAL:
                rgb = stylize.stylize(rgb.unsqueeze(2), style).squeeze(2)
            rgb, flow_image = rgb.to(device), flow_image.to(device)
            probabilities.append(segmentation.predict(model, rgb, flow_image, flip=flip).float().cpu())
            masks.append(mask)
    prob = torch.cat(probabilities)[:, 0].numpy()
    exact = torch.cat(masks)[:, 0].numpy()
    boxes = segmentation.mask_to_box(exact > 0.5, largest_component=False)  # what MoCA annotates
    box_frames, _ = segmentation.moca_box_scores(prob, boxes, "locomotion", clip_ids=frames.clip_index.tolist())
    return pd.DataFrame({"clip": frames.clip_index, "iou": segmentation.iou(prob > 0.5, exact > 0.5),
                         "box_iou": box_frames["box_iou"].to_numpy()})


def clip_miou(frames: pd.DataFrame, column: str = "iou", *, replicates: int = 1000, seed: int = 0) -> Estimate:
    """Mean over clips of each clip's mean IoU, with bootstrap replicates over clips (paired between
    frames of the same clips and ``seed``)."""
    per_clip = frames.groupby("clip")[column].mean().to_numpy()
    return claims.bootstrap(lambda rows: float(per_clip[rows].mean()), len(per_clip), replicates=replicates,
                            seed=seed)


def joint_to_dynamic(result: Any) -> Estimate:
    """Joint units over dynamic units of a ``UnitwiseResult`` (the paper's Fig. 15 comparison), with
    its bootstrap replicates (NaN where a replicate has no dynamic unit)."""
    joint, dynamic = result.percent("joint"), result.percent("dynamic")
    with np.errstate(invalid="ignore", divide="ignore"):
        value = joint.value / dynamic.value if dynamic.value else float("nan")
        return Estimate(value, joint.replicates / np.where(dynamic.replicates > 0, dynamic.replicates, np.nan))


@dataclass
class FusionStudy:
    """Trained two-stream models, their measurements and their per-frame scores."""

    profile: str
    entries: dict[str, zoo.ZooEntry]  # label -> entry (the study, then the single streams)
    measurements: dict[str, Measurement]  # study models on held-out davis
    frames: pd.DataFrame  # label, world, flip, style, clip, iou, box_iou
    baselines: pd.DataFrame  # baseline, world, mIoU (input-free masks from the training masks)
    clips: dict[str, VosClips] = field(default_factory=dict)  # the scored clips of each world
    replicates: int = 1000
    seed: int = 0
    labels: list[str] = field(default_factory=list)  # the study models, in order

    def miou(self, label: str, world: str = CAMOUFLAGE, *, flip: bool = False, style: str = ORIGINAL,
             column: str = "iou") -> Estimate:
        """A model's mIoU on ``world`` with bootstrap replicates over clips (paired across models)."""
        rows = self.frames.query("label == @label and world == @world and flip == @flip and style == @style")
        if rows.empty:
            raise KeyError(f"no scores for {label!r} on {world!r} (flip={flip}, style={style!r})")
        return clip_miou(rows, column, replicates=self.replicates, seed=self.seed)

    def scores_table(self, world: str = CAMOUFLAGE, column: str = "iou") -> pd.DataFrame:
        """mIoU and success rates at IoU 0.5 ... 0.9 (and their mean) of every model on ``world``,
        without and with flip (Fig. 15, bottom); ``column="box_iou"`` scores MoCA's boxes."""
        rows = []
        for (label, flip), group in self.frames.query("world == @world and style == @ORIGINAL").groupby(
                ["label", "flip"], sort=False):
            estimate = clip_miou(group, column, replicates=self.replicates, seed=self.seed)
            lo, hi = estimate.interval()
            row = {"model": label, "flip": flip, "mIoU": estimate.value, "mIoU_lo": lo, "mIoU_hi": hi}
            row.update(segmentation.success_rates(group[column].to_numpy()).to_dict())
            rows.append(row)
        return pd.DataFrame(rows)

    def miou_table(self) -> pd.DataFrame:
        """Every model's mIoU on each world: plain, with flip, and (held-out ``davis``) the mean over
        the RGB styles."""
        rows = []
        for label in self.entries:
            for world in self.clips:
                styled = [self.miou(label, world, style=style).value for style in stylize.STYLES
                          if not self.frames.query("label == @label and world == @world and style == @style").empty]
                rows.append({"model": label, "world": world, "mIoU": self.miou(label, world).value,
                             "mIoU with flip": self.miou(label, world, flip=True).value,
                             "mIoU, RGB restyled": float(np.mean(styled)) if styled else float("nan")})
        return pd.DataFrame(rows)

    def retention(self, label: str, world: str = HELD_OUT) -> pd.Series:
        """Clean and per-style mIoU of a model on ``world``, and the mean over styles as a share of clean."""
        styled = {style: self.miou(label, world, style=style).value for style in stylize.STYLES}
        clean = self.miou(label, world).value
        return pd.Series({"clean": clean, **styled, "retention": np.mean(list(styled.values())) / clean
                          if clean > 0 else float("nan")}, name=label)

    def units(self, kinds: Sequence[str] = ("fusion",), threshold: float = 0.5, level: float = 0.95) -> pd.DataFrame:
        """Unit-wise categories (percent, interval) of the study models at their stages of ``kinds``."""
        parts = []
        for label in self.labels:
            model = self.entries[label].model
            wanted = [stage.name for stage in model.stages if stage.kind in kinds]
            frame = self.measurements[label].units_frame(threshold, level)
            frame = frame[frame["layer"].isin(wanted)].merge(stage_labels(model, wanted), on="layer")
            frame.insert(0, "model", label)
            parts.append(frame)
        return pd.concat(parts, ignore_index=True)

    def layers(self, level: float = 0.95) -> pd.DataFrame:
        """Layer-wise dynamic and static percent of every measured stage of the study models."""
        parts = []
        for label in self.labels:
            measurement = self.measurements[label]
            frame = measurement.to_frame(level=level).merge(
                stage_labels(self.entries[label].model, measurement.layers), on="layer")
            frame.insert(0, "model", label)
            parts.append(frame)
        frame = pd.concat(parts, ignore_index=True)
        for column in ("fraction", "fraction_lo", "fraction_hi"):
            frame[column.replace("fraction", "percent")] = 100 * frame[column]
        return frame

    def unit_estimate(self, label: str, layer: str, category: str, threshold: float = 0.5) -> Estimate:
        """The percent of ``category`` units at ``layer`` of a study model, with its replicates."""
        return self.measurements[label].unitwise(layer, threshold).percent(category)

    def joint_to_dynamic(self, label: str, layer: str, threshold: float = 0.5) -> Estimate:
        return joint_to_dynamic(self.measurements[label].unitwise(layer, threshold))

    def dynamic_ratio(self, label: str, layer: str, threshold: float = 0.5) -> Estimate:
        return dynamic_ratio(self.measurements[label].unitwise(layer, threshold))

    def examples(self, world: str = CAMOUFLAGE, clips: Sequence[int] = (0, 1, 2),
                 labels: Sequence[str] | None = None) -> dict[str, Any]:
        """The middle frame of some clips of ``world`` with each model's foreground probability:
        the arguments of :func:`stdyn.plots.segmentation_strip`."""
        frames = VosFrames(self.clips[world], exact=True)
        middle = self.clips[world].parts[0].flow.shape[2] // 2
        picked = [int(np.flatnonzero(frames.clip_index == c)[middle]) for c in clips]
        rgb, flow_image, masks = (torch.stack(column) for column in zip(*(frames[k] for k in picked)))
        predictions = {}
        with torch.no_grad():
            for label in labels or self.entries:
                model = self.entries[label].model.eval()
                device = self.entries[label].device
                predictions[label] = segmentation.predict(model, rgb.to(device), flow_image.to(device)).cpu()
        return {"rgb": rgb, "flow_image": flow_image, "masks": masks, "predictions": predictions,
                "row_labels": [f"{world} clip {c}" for c in clips]}

    def testbed(self) -> Testbed:
        """The AVOS testbed checks: both streams matter on held-out davis; motion is usable where
        appearance fails (moca); the two-stream model keeps most of its mIoU with its RGB restyled."""
        reference = self.miou(REFERENCE, HELD_OUT)
        checks = []
        for name in SINGLE_STREAM:
            single = self.miou(name, HELD_OUT)
            checks.append(Check("both streams matter", f"{REFERENCE} vs {name}, held-out {HELD_OUT}",
                                f">= {BOTH_STREAMS_MARGIN:.2f} mIoU above",
                                f"{reference.value:.3f} vs {single.value:.3f}",
                                at_least(reference.value - single.value, BOTH_STREAMS_MARGIN)))
        best = max(self.labels, key=lambda label: self.miou(label, CAMOUFLAGE).value)
        best_moca, appearance = self.miou(best, CAMOUFLAGE), self.miou("appearance only", CAMOUFLAGE)
        checks.append(Check("motion where appearance fails", f"{best} vs appearance only, {CAMOUFLAGE}",
                            f">= {MOTION_MARGIN:.2f} mIoU above", f"{best_moca.value:.3f} vs {appearance.value:.3f}",
                            at_least(best_moca.value - appearance.value, MOTION_MARGIN)))
        kept = self.retention(REFERENCE)
        checks.append(Check("style retention", f"{REFERENCE}, RGB restyled, held-out {HELD_OUT}",
                            f">= {MIN_RGB_RETENTION:.2f} of clean",
                            f"{kept['retention']:.2f} ({kept.drop(['clean', 'retention']).mean():.3f} / {kept['clean']:.3f})",
                            at_least(kept["retention"], MIN_RGB_RETENTION)))
        floor = float(self.baselines.query("world == @HELD_OUT")["mIoU"].max())
        checks.append(Check("above input-free baselines", f"{REFERENCE}, held-out {HELD_OUT}",
                            f">= best baseline + {BOTH_STREAMS_MARGIN:.2f}", f"{reference.value:.3f} vs {floor:.3f}",
                            at_least(reference.value - floor, BOTH_STREAMS_MARGIN)))
        models = pd.DataFrame([{"model": label, "world": world, "mIoU": self.miou(label, world).value}
                               for label in self.entries for world in (HELD_OUT, CAMOUFLAGE)])
        return Testbed(checks_frame(checks), models)


def baseline_scores(train: VosClips, evaluations: Mapping[str, VosClips]) -> pd.DataFrame:
    """The best constant mask and the centre prior, fitted on the training masks and scored
    (mIoU over clips) on each evaluation world."""
    train_masks = torch.cat([part.masks[:, :-1].flatten(0, 1) for part in train.parts]).numpy()
    masks = {"constant": segmentation.constant_baseline(train_masks),
             "centre prior": segmentation.centre_prior_baseline(train_masks)}
    rows = []
    for world, clips in evaluations.items():
        frames = VosFrames(clips, exact=True)
        exact = np.stack([frames[k][2][0].numpy() for k in range(len(frames))])
        for name, mask in masks.items():
            per_frame = pd.DataFrame({"clip": frames.clip_index, "iou": segmentation.iou(mask, exact)})
            rows.append({"baseline": name, "world": world, "mIoU": clip_miou(per_frame).value})
    return pd.DataFrame(rows)


def _scores(entry: zoo.ZooEntry, label: str, world: str, clips: VosClips, prof: profiles.Profile,
            styles: Sequence[str]) -> pd.DataFrame:
    """Per-frame scores of one entry on one world (flip off and on; styles without flip), cached
    beside the entry."""
    key = config_key({"world": world, "styles": list(styles), "data": VOS.data_sizes(prof, 0),
                      "n": len(clips)}, frame_scores, segmentation, VosFrames)
    path = entry.run_dir / f"segmentation-scores-{key}.pt"
    cached = load_tensors(path)
    if cached is not None:
        return pd.DataFrame(cached["frames"])
    runs = [(False, ORIGINAL), (True, ORIGINAL), *((False, style) for style in styles)]
    parts = []
    for flip, style in runs:
        frame = frame_scores(entry.model, clips, flip=flip, style=style, device=entry.device)
        frame.insert(0, "style", style)
        frame.insert(0, "flip", flip)
        parts.append(frame)
    frame = pd.concat(parts, ignore_index=True)
    save_tensors(path, {"frames": frame.to_dict(orient="list")})
    return frame


def fusion_study(profile: str | profiles.Profile = "quick", *, seed: int = 0, models: Mapping[str, str] | None = None,
                 device: str | None = None, progress: bool = True) -> FusionStudy:
    """Train (or load) the study's models and the single-stream baselines on ``davis+ytvos``,
    measure the study's models on held-out ``davis`` and score every model on ``davis`` and
    ``moca`` (with and without flip; ``davis`` also with its RGB restyled)."""
    prof = profiles.get(profile)
    study = dict(models or STUDY_MODELS)
    labels = {**study, **SINGLE_STREAM}
    entries = dict(zip(labels, zoo.get_many([dict(model=name, world=TRAIN_WORLD, profile=prof, seed=seed,
                                                   device=device) for name in labels.values()], progress=progress)))
    measurements = {label: measure_entry(entries[label], HELD_OUT, prof, seed=seed, progress=progress)
                    for label in study}
    evaluations = {world: zoo.measure_set(world, prof, progress=progress) for world in (HELD_OUT, CAMOUFLAGE)}
    parts = []
    for label, entry in tqdm(entries.items(), desc="scoring", disable=not progress):
        for world, clips in evaluations.items():
            frame = _scores(entry, label, world, clips, prof, stylize.STYLES if world == HELD_OUT else ())
            frame["world"] = world
            frame.insert(0, "label", label)
            parts.append(frame)
    frames = pd.concat(parts, ignore_index=True)
    train = zoo.datasets(TRAIN_WORLD, prof, progress=progress)[0]
    return FusionStudy(prof.name, entries, measurements, frames, baseline_scores(train, evaluations),
                       clips=evaluations, replicates=BOOTSTRAP.get(prof.name, 200) * 5, seed=seed, labels=list(study))
