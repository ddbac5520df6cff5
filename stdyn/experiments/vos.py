"""AVOS studies: two-stream models from the zoo, measured on held-out ``davis`` and scored frame by frame.

>>> study = vos_study({"MATNet": ("matnet", "davis+ytvos"), "NoYTB": ("matnet", "davis")}, "quick")
>>> study.layers()                    # layer-wise dynamic and static percent of every measured stage
>>> study.units()                     # unit-wise categories at the fusion layers
>>> study.scores_table("moca")        # mIoU and success rates, with and without flip

Each model (a label for a zoo model name and the world it trains on; worlds join with ``+``) is
measured on held-out ``davis`` (restyled frames vs jittered flow, :class:`~stdyn.core.pairs.TwoStreamPairs`)
and scored on every frame of the held-out clips of the chosen worlds. The chapters' AVOS parts
build on it: the fusion study (:mod:`stdyn.experiments.fusion`), the architectures
(:data:`ARCHITECTURES`), the training worlds (:data:`DATASETS`, :func:`centre_bias_maps`), the
training dynamics and unit removal (:func:`removal_frame`).
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
from stdyn.data.worlds import vos as vos_worlds
from stdyn.experiments.surveys import BOOTSTRAP, Survey, dynamic_ratio, measure_entry, stage_labels
from stdyn.tasks import VOS, segmentation
from stdyn.tasks.vos import VosClips, VosFrames
from stdyn.training import profiles, zoo

TRAIN_WORLD, HELD_OUT, CAMOUFLAGE = "davis+ytvos", "davis", "moca"
ORIGINAL = "original"

# Paper Fig. 4: FusionSeg trained on DAVIS16; MATNet, its variants and RTNet on DAVIS16 + YouTube-VOS.
ARCHITECTURES: dict[str, tuple[str, str]] = {
    "FusionSeg": ("fusionseg", "davis"),
    "MATNet": ("matnet", TRAIN_WORLD),
    "MATNet NoBAR": ("matnet_nobar", TRAIN_WORLD),
    "MATNet NoYTB": ("matnet", "davis"),
    "RTNet": ("rtnet", TRAIN_WORLD),
}
# Paper Table 1 and Fig. 8: FusionSeg trained on each AVOS training world.
DATASETS: tuple[str, ...] = ("davis", "ytvos", "imagenetvid", "tao")
# Paper Fig. 10 (bottom): MATNet trained on DAVIS16 alone and with YouTube-VOS.
TRAINING_DYNAMICS: dict[str, tuple[str, str]] = {"davis": ("matnet", "davis"), "davis+ytvos": ("matnet", TRAIN_WORLD)}


def frame_scores(model: nn.Module, clips: VosClips | Any, *, flip: bool = False, style: str = ORIGINAL,
                 frames: Sequence[int] | None = None, batch_size: int = 64,
                 device: str | torch.device = "cpu") -> pd.DataFrame:
    """Frames of ``clips`` (all, or the frame indices ``frames`` of each clip) segmented by
    ``model``: one row per frame with its clip and frame index, mask IoU against the exact mask and
    box IoU by the MoCA protocol (:func:`~stdyn.tasks.segmentation.moca_box_scores`).

    ``flip`` averages the prediction with that of the mirrored inputs; ``style`` restyles the RGB
    frames (:data:`stdyn.core.stylize.STYLES`) and leaves the flow as it is.
    """
    examples = VosFrames(clips, frames, exact=True)
    loader = torch.utils.data.DataLoader(examples, batch_size=batch_size)
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
    box_frames, _ = segmentation.moca_box_scores(prob, boxes, "locomotion", clip_ids=examples.clip_index.tolist())
    return pd.DataFrame({"clip": examples.clip_index, "frame": examples.frame_index,
                         "iou": segmentation.iou(prob > 0.5, exact > 0.5), "box_iou": box_frames["box_iou"].to_numpy()})


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
class VosStudy:
    """Trained two-stream models, their measurements and their per-frame scores."""

    profile: str
    entries: dict[str, zoo.ZooEntry]  # label -> entry
    measurements: dict[str, Measurement]  # the measured models (``labels``) on held-out davis
    frames: pd.DataFrame  # clip, frame, iou, box_iou, label, world, flip, style
    baselines: pd.DataFrame  # baseline, world, mIoU (input-free masks from the training masks)
    clips: dict[str, VosClips] = field(default_factory=dict)  # the scored clips of each world
    replicates: int = 1000
    seed: int = 0
    labels: list[str] = field(default_factory=list)  # the measured models, in order

    def miou(self, label: str, world: str = CAMOUFLAGE, *, flip: bool = False, style: str = ORIGINAL,
             frames: Sequence[int] | None = None, column: str = "iou") -> Estimate:
        """A model's mIoU on ``world`` (over the frame indices ``frames`` of each clip, or all scored)
        with bootstrap replicates over clips (paired across models)."""
        rows = self.frames.query("label == @label and world == @world and flip == @flip and style == @style")
        if frames is not None:
            rows = rows[rows["frame"].isin(list(frames))]
        if rows.empty:
            raise KeyError(f"no scores for {label!r} on {world!r} (flip={flip}, style={style!r}, frames={frames})")
        return clip_miou(rows, column, replicates=self.replicates, seed=self.seed)

    def _has(self, label: str, world: str, flip: bool = False, style: str = ORIGINAL) -> bool:
        return bool(((self.frames["label"] == label) & (self.frames["world"] == world) & (self.frames["flip"] == flip)
                     & (self.frames["style"] == style)).any())

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
        """Every model's mIoU on each world: plain, with flip, and where the RGB frames were restyled,
        the mean over the styles and its share of the clean mIoU on the same (measured) frames."""
        rows = []
        for label in self.entries:
            for world in dict.fromkeys(self.frames["world"]):
                row = {"model": label, "world": world, "mIoU": self.miou(label, world).value,
                       "mIoU with flip": self.miou(label, world, flip=True).value
                       if self._has(label, world, flip=True) else float("nan"),
                       "mIoU, RGB restyled": float("nan"), "retention": float("nan")}
                if all(self._has(label, world, style=style) for style in stylize.STYLES):
                    kept = self.retention(label, world)
                    row.update({"mIoU, RGB restyled": kept[list(stylize.STYLES)].mean(), "retention": kept["retention"]})
                rows.append(row)
        return pd.DataFrame(rows)

    def retention(self, label: str, world: str = HELD_OUT) -> pd.Series:
        """A model's mIoU on the restyled frames of ``world`` (per style), its clean mIoU on the same
        frames, and the mean over styles as a share of clean."""
        styled_rows = self.frames.query("label == @label and world == @world and style != @ORIGINAL")
        if styled_rows.empty:
            raise KeyError(f"no restyled scores for {label!r} on {world!r}")
        frames = sorted(styled_rows["frame"].unique())
        styled = {style: self.miou(label, world, style=style).value for style in stylize.STYLES}
        clean = self.miou(label, world, frames=frames).value
        return pd.Series({"clean": clean, **styled, "retention": np.mean(list(styled.values())) / clean
                          if clean > 0 else float("nan")}, name=label)

    def units(self, kinds: Sequence[str] = ("fusion",), threshold: float = 0.5, level: float = 0.95) -> pd.DataFrame:
        """Unit-wise categories (percent, interval) of the measured models at their stages of
        ``kinds`` ("appearance", "motion", "fusion"); ``series`` names model and branch."""
        parts = []
        for label in self.labels:
            model = self.entries[label].model
            wanted = [stage.name for stage in model.stages if stage.kind in kinds]
            frame = self.measurements[label].units_frame(threshold, level)
            frame = frame[frame["layer"].isin(wanted)].merge(stage_labels(model, wanted), on="layer")
            frame.insert(0, "model", label)
            frame.insert(1, "series", label + " (" + frame["branch"] + ")")
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
            frame.insert(1, "series", label + " (" + frame["branch"] + ")")
            parts.append(frame)
        frame = pd.concat(parts, ignore_index=True)
        for column in ("fraction", "fraction_lo", "fraction_hi"):
            frame[column.replace("fraction", "percent")] = 100 * frame[column]
        return frame

    def layer_estimate(self, label: str, layer: str, factor: str) -> Estimate:
        """The layer-wise percent of ``factor`` ("dynamic" or "static") at ``layer`` of a measured model."""
        return self.measurements[label].layerwise(layer).percent(factor)

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


def _scores(entry: zoo.ZooEntry, world: str, clips: VosClips, prof: profiles.Profile, *, flip: bool, style: str,
            frames: Sequence[int] | None) -> pd.DataFrame:
    """Per-frame scores of one entry on one world in one pass (flip, style, frames), cached beside the entry."""
    key = config_key({"world": world, "flip": flip, "style": style, "frames": None if frames is None else list(frames),
                      "data": VOS.data_sizes(prof, 0), "n": len(clips)}, frame_scores, segmentation, VosFrames)
    path = entry.run_dir / f"segmentation-scores-{key}.pt"
    cached = load_tensors(path)
    if cached is not None:
        return pd.DataFrame(cached["frames"])
    frame = frame_scores(entry.model, clips, flip=flip, style=style, frames=frames, device=entry.device)
    save_tensors(path, {"frames": frame.to_dict(orient="list")})
    return frame


def vos_study(models: Mapping[str, tuple[str, str]], profile: str | profiles.Profile = "quick", *, seed: int = 0,
              measure: Sequence[str] | None = None, score_worlds: Sequence[str] = (HELD_OUT, CAMOUFLAGE),
              flips: Sequence[bool] = (False, True), styled_worlds: Sequence[str] = (HELD_OUT,),
              baseline_world: str = TRAIN_WORLD, device: str | None = None, progress: bool = True) -> VosStudy:
    """Train (or load) ``models`` (label -> (zoo model name, training world)), measure the labels
    in ``measure`` (default: all) on held-out ``davis``, and score every model on every frame of the
    held-out clips of ``score_worlds``, once per ``flips`` value. On ``styled_worlds`` each model
    is also scored with the RGB frame in each style, on the frame of each clip that measurement
    uses (the middle one). The input-free baselines are fitted on ``baseline_world``'s training masks."""
    prof = profiles.get(profile)
    measured = list(models) if measure is None else list(measure)
    unknown = [label for label in measured if label not in models]
    if unknown:
        raise ValueError(f"cannot measure {unknown}: not among the study's models {list(models)}")
    entries = dict(zip(models, zoo.get_many([{"model": name, "world": world, "profile": prof, "seed": seed,
                                              "device": device} for name, world in models.values()],
                                            progress=progress)))
    measurements = {label: measure_entry(entries[label], HELD_OUT, prof, seed=seed, progress=progress)
                    for label in measured}
    evaluations = {world: zoo.measure_set(world, prof, progress=progress) for world in score_worlds}
    parts = []
    for label, entry in tqdm(entries.items(), desc="scoring", disable=not progress):
        for world, clips in evaluations.items():
            middle = [clips.parts[0].flow.shape[2] // 2]
            passes = [(flip, ORIGINAL, None) for flip in flips]
            passes += [(False, style, middle) for style in stylize.STYLES] if world in styled_worlds else []
            for flip, style, frames in passes:
                frame = _scores(entry, world, clips, prof, flip=flip, style=style, frames=frames)
                parts.append(frame.assign(label=label, world=world, flip=flip, style=style))
    frames = pd.concat(parts, ignore_index=True)
    train = zoo.datasets(baseline_world, prof, progress=progress)[0]
    return VosStudy(prof.name, entries, measurements, frames, baseline_scores(train, evaluations),
                    clips=evaluations, replicates=BOOTSTRAP.get(prof.name, 200) * 5, seed=seed, labels=measured)


def dataset_study(profile: str | profiles.Profile = "quick", *, seed: int = 0, worlds: Sequence[str] = DATASETS,
                  model: str = "fusionseg", device: str | None = None, progress: bool = True) -> VosStudy:
    """``model`` trained on each of ``worlds`` (labelled by world), measured on held-out ``davis``
    and scored there (paper Table 1, Fig. 8)."""
    return vos_study({world: (model, world) for world in worlds}, profile, seed=seed, score_worlds=(HELD_OUT,),
                     styled_worlds=(), baseline_world=HELD_OUT, device=device, progress=progress)


def centre_bias_maps(profile: str | profiles.Profile = "quick", worlds: Sequence[str] = DATASETS, *,
                     progress: bool = True) -> dict[str, torch.Tensor]:
    """The centre-bias map (S, S) of each world's training masks, as the paper defines it: the
    average mask per pixel, normalised to a maximum of one."""
    prof = profiles.get(profile)
    maps = {}
    for world in worlds:
        train = zoo.datasets(world, prof, progress=progress)[0]
        maps[world] = vos_worlds.centre_bias(torch.cat([part.masks.flatten(0, 1) for part in train.parts]))
    return maps


def removal_table(entry: zoo.ZooEntry, measurement: Measurement, layers: Sequence[str], clips: VosClips, *,
                  fractions: Sequence[float], draws: int, seed: int = 0, threshold: float = 0.5, extra: float = 0.05,
                  progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Remove the top-k static units, the top-k dynamic units and random units of each of
    ``layers`` of a two-stream model and score each clip's mIoU on ``clips`` (paper Fig. 11, bottom).

    Each layer's random baseline draws ``k`` units among the ``k + extra * n`` least biased
    toward the layer's dominant factor, the one with the larger layer-wise percent
    (:func:`stdyn.interventions.least_biased_units`). Returns the runs (layer, kind, k, draw,
    ``clip_miou``: each clip's mIoU, and their mean ``mIoU``) and one row per layer (layer,
    channels, dynamic and static percent, dominant factor). Cached beside the entry.
    """
    from stdyn import interventions

    rows, sets = [], {}
    for layer in layers:
        result = measurement.layerwise(layer)
        percent = {factor: result.percent(factor).value for factor in ("dynamic", "static")}
        dominant = max(percent, key=percent.get)
        units = measurement.unitwise(layer, threshold)
        n = len(units.categories)
        ks = sorted({int(round(f * n)) for f in fractions})
        sets[layer] = {factor: interventions.top_k_sets(interventions.rank_units(units, factor), ks)
                       for factor in ("static", "dynamic")}
        sets[layer]["random"] = interventions.least_biased_units(units, dominant, ks, draws=draws, seed=seed,
                                                                 extra=extra)
        rows.append({"layer": layer, "channels": n, "dynamic (%)": percent["dynamic"],
                     "static (%)": percent["static"], "dominant": dominant})
    layer_table = pd.DataFrame(rows)
    listed = {layer: {kind: {str(k): [np.sort(c).tolist() for c in draws_]
                             for k, draws_ in by_k.items()} for kind, by_k in kinds.items()}
              for layer, kinds in sets.items()}
    key = config_key({"sets": listed, "clips": clips.name, "n": len(clips)}, frame_scores, segmentation, VosFrames)
    path = entry.run_dir / f"removal-{key}.pt"
    cached = load_tensors(path)
    if cached is not None:
        runs = pd.DataFrame(cached["runs"])
        runs["clip_miou"] = [np.asarray(c) for c in runs["clip_miou"]]
        return runs, layer_table

    def per_clip(model: nn.Module, data: VosClips) -> np.ndarray:
        frame = frame_scores(model, data, device=entry.device)
        return frame.groupby("clip")["iou"].mean().to_numpy()

    parts = []
    for layer in layers:
        runs = interventions.removal_runs(entry.model, clips, layer, sets[layer], per_clip, progress=progress)
        runs.insert(0, "layer", layer)
        parts.append(runs.rename(columns={"score": "clip_miou"}))
    runs = pd.concat(parts, ignore_index=True)
    runs["mIoU"] = [float(c.mean()) for c in runs["clip_miou"]]
    save_tensors(path, {"runs": {**runs.drop(columns="clip_miou").to_dict(orient="list"),
                                 "clip_miou": [c.tolist() for c in runs["clip_miou"]]}})
    return runs, layer_table


def checkpoint_measurements(entries: Mapping[tuple[str, str], zoo.ZooEntry], layers: Sequence[str],
                            profile: str | profiles.Profile = "quick", *, seed: int = 0,
                            progress: bool = True) -> dict[int, Survey]:
    """Every epoch checkpoint of each entry (keyed (model, training world)) measured at ``layers``
    on held-out ``davis``: one :class:`~stdyn.experiments.surveys.Survey` per epoch."""
    prof = profiles.get(profile)
    epochs = sorted(set.intersection(*(set(entry.epochs) for entry in entries.values())))
    return {epoch: Survey(prof.name, dict(entries), {
        key: measure_entry(entry, HELD_OUT, prof, layers=layers, epoch=epoch, seed=seed, progress=False)
        for key, entry in entries.items()}) for epoch in tqdm(epochs, desc="measuring checkpoints", disable=not progress)}
