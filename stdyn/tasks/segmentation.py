"""Segmentation metrics, flip test-time augmentation, the MoCA box protocol and trivial baselines.

Masks are arrays or tensors (..., H, W): boolean, or numbers where ``> 0.5`` is foreground
(probability maps are thresholded the same way). Everything is computed in numpy and vectorised
over the leading dimensions, except connected components (one ``scipy.ndimage.label`` per frame).

- :func:`iou` per frame (an empty prediction of an empty target scores 1), :func:`mean_iou`
  (the mean of per-frame IoU; with clips, the mean over clips of each clip's mean, as the
  benchmarks report mIoU), :func:`success_rates` (the share of frames with IoU >= t, and their
  mean over the thresholds).
- :func:`predict_with_flip`: MATNet's test-time augmentation, averaging the probabilities of the
  frame and of its mirror image. Mirroring a flow image mirrors the motion too:
  :func:`flip_flow_image`.
- The MoCA protocol (the dataset has boxes, not masks): :func:`moca_binarize` (threshold at 0.5,
  invert when most of the border is foreground), :func:`mask_to_box` (the box of the largest
  connected component), :func:`box_iou`, and :func:`moca_box_scores` (tidy per-frame scores and a
  summary by motion type).
- :func:`constant_baseline` and :func:`centre_prior_baseline`: masks that ignore the input.

Boxes are ``(x0, y0, x1, y1)`` in pixel-edge coordinates: pixel (row i, column j) covers
[j, j + 1) x [i, i + 1), so the box of pixels with columns 2..4 has x0 = 2 and x1 = 5, and its
width is x1 - x0. A box given as (x, y, w, h) is ``(x, y, x + w, y + h)``. An empty mask has the
box (nan, nan, nan, nan), whose IoU with any box is 0.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import ndimage
from torch import Tensor, nn

from stdyn.data.flow import hsv_to_rgb, rgb_to_hsv

__all__ = [
    "SR_THRESHOLDS",
    "box_iou",
    "centre_prior_baseline",
    "constant_baseline",
    "flip_flow_image",
    "iou",
    "mask_to_box",
    "mean_iou",
    "moca_binarize",
    "moca_box_scores",
    "predict",
    "predict_with_flip",
    "success_rates",
]

SR_THRESHOLDS: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)
"""The IoU thresholds of the success rates the paper reports on MoCA."""

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def _numpy(x: Any) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _binary(x: Any, threshold: float = 0.5) -> np.ndarray:
    """A boolean array: ``x`` itself if boolean, else ``x > threshold``."""
    array = _numpy(x)
    return array if array.dtype == bool else array > threshold


def _frames(masks: Any) -> np.ndarray:
    """Masks (N, H, W) or (N, 1, H, W) as a numpy array (N, H, W)."""
    array = _numpy(masks)
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 3:
        raise ValueError(f"expected masks shaped (N, H, W) or (N, 1, H, W), got {array.shape}")
    return array


# ---------------------------------------------------------------------------------------------
# Region similarity


def iou(pred: Any, target: Any) -> np.ndarray | float:
    """Intersection over union of binary masks (..., H, W), per frame.

    ``pred`` and ``target`` broadcast against each other (e.g. one baseline mask (H, W) against
    masks (N, H, W)); non-boolean inputs are foreground where ``> 0.5``. Frames where both masks
    are empty score 1. Returns an array of the leading shape, or a float for a single frame.
    """
    p, t = _binary(pred), _binary(target)
    if p.ndim < 2 or t.ndim < 2:
        raise ValueError(f"expected masks (..., H, W), got shapes {p.shape} and {t.shape}")
    intersection = np.logical_and(p, t).sum(axis=(-2, -1))
    union = np.logical_or(p, t).sum(axis=(-2, -1))
    scores = np.where(union == 0, 1.0, intersection / np.maximum(union, 1))
    return float(scores) if scores.ndim == 0 else scores


def mean_iou(ious: Any, clip_ids: Sequence[Any] | None = None) -> float:
    """The mean of per-frame IoUs; per clip first when clips are given.

    ``ious`` is a flat sequence of per-frame IoUs (with ``clip_ids``, one id per frame), or a
    sequence of per-clip sequences (ragged allowed). With clips the result is the mean over clips
    of each clip's mean IoU (the benchmarks' mIoU), so long clips do not weigh more.
    """
    if isinstance(ious, Tensor):
        ious = _numpy(ious)
    if clip_ids is None and len(ious) and np.ndim(ious[0]) > 0:
        per_clip = [float(np.mean(_numpy(c))) for c in ious if len(c)]
        return float(np.mean(per_clip)) if per_clip else float("nan")
    values = _numpy(ious).astype(float).ravel()
    if clip_ids is None:
        return float(values.mean()) if values.size else float("nan")
    if len(clip_ids) != values.size:
        raise ValueError(f"got {values.size} IoUs but {len(clip_ids)} clip ids")
    return float(pd.Series(values).groupby(np.asarray(clip_ids)).mean().mean())


def success_rates(ious: Any, thresholds: Sequence[float] = SR_THRESHOLDS) -> pd.Series:
    """The share of frames with IoU >= t for each threshold t, and their mean.

    Returns a Series indexed ``"SR@0.5"``, ..., ``"SR mean"`` (the mean over the thresholds).
    """
    values = _numpy(ious).astype(float).ravel()
    if values.size == 0:
        raise ValueError("success_rates needs at least one IoU")
    t = np.asarray(thresholds, dtype=float)
    rates = (values[None, :] >= t[:, None]).mean(axis=1)
    index = [f"SR@{x:g}" for x in t] + ["SR mean"]
    return pd.Series([*rates, rates.mean()], index=index, name="success_rate")


# ---------------------------------------------------------------------------------------------
# Flip test-time augmentation


def flip_flow_image(image: Tensor) -> Tensor:
    """Mirror flow images (..., 3, H, W) left to right, as the flow of the mirrored video.

    Mirroring moves every pixel to the other side *and* turns the flow (u, v) into (-u, v). In
    the HSV encoding (hue = atan2(v, u) / 2 pi turns) that is hue -> 0.5 - hue (mod 1), with
    saturation (the magnitude) and value unchanged.
    """
    hue, saturation, value = rgb_to_hsv(image.flip(-1)).unbind(-3)
    hue = torch.remainder(0.5 - hue, 1.0)
    return hsv_to_rgb(torch.stack([hue, saturation, value], -3)).clamp(0.0, 1.0)


def _mask_logits(output: Any) -> Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


@torch.no_grad()
def predict(model: nn.Module, rgb: Tensor, flow_image: Tensor, flip: bool = False) -> Tensor:
    """Foreground probabilities ``sigmoid(model(rgb, flow_image))`` (B, 1, H, W); with ``flip``,
    :func:`predict_with_flip`. The model is used in the mode it is in (call ``model.eval()``)."""
    if flip:
        return predict_with_flip(model, rgb, flow_image)
    return torch.sigmoid(_mask_logits(model(rgb, flow_image)))


@torch.no_grad()
def predict_with_flip(model: nn.Module, rgb: Tensor, flow_image: Tensor) -> Tensor:
    """MATNet's flip test-time augmentation: the mean of the foreground probabilities of the input
    and of its mirror image (frames flipped left to right, flow images by :func:`flip_flow_image`),
    the latter flipped back. A model that commutes with mirroring gives what it gives without."""
    plain = torch.sigmoid(_mask_logits(model(rgb, flow_image)))
    mirrored = torch.sigmoid(_mask_logits(model(rgb.flip(-1), flip_flow_image(flow_image)))).flip(-1)
    return (plain + mirrored) / 2


# ---------------------------------------------------------------------------------------------
# The MoCA box protocol


def moca_binarize(prob: Any, threshold: float = 0.5, border_fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Masks from probability maps (..., H, W): ``prob > threshold``, inverted in every frame where
    more than ``border_fraction`` of the one-pixel image border is foreground (the model then
    segmented the background). Returns ``(masks, inverted)``, ``inverted`` of the leading shape."""
    mask = _binary(prob, threshold)
    if mask.shape[-1] < 2 or mask.shape[-2] < 2:
        raise ValueError(f"expected maps (..., H, W) with H, W >= 2, got {mask.shape}")
    border = np.concatenate(
        [mask[..., 0, :], mask[..., -1, :], mask[..., 1:-1, 0], mask[..., 1:-1, -1]], axis=-1
    )
    inverted = border.mean(axis=-1) > border_fraction
    return np.where(inverted[..., None, None], ~mask, mask), inverted


def mask_to_box(mask: Any, largest_component: bool = True) -> np.ndarray:
    """The box (x0, y0, x1, y1) of a binary mask (H, W), or of each of (N, H, W).

    With ``largest_component`` (the MoCA protocol for predictions), the box of the largest
    8-connected component (ties: the first in scan order); otherwise of all foreground pixels (for
    ground-truth masks). An empty mask gives (nan, nan, nan, nan).
    """
    m = _binary(mask)
    if m.ndim == 3:
        return np.stack([mask_to_box(frame, largest_component) for frame in m]) if len(m) else np.zeros((0, 4))
    if m.ndim != 2:
        raise ValueError(f"expected a mask (H, W) or masks (N, H, W), got shape {m.shape}")
    if not m.any():
        return np.full(4, np.nan)
    if largest_component:
        labels, count = ndimage.label(m, structure=_EIGHT_CONNECTED)
        if count > 1:
            sizes = np.bincount(labels.ravel())[1:]
            m = labels == (int(np.argmax(sizes)) + 1)
    rows = np.flatnonzero(m.any(axis=1))
    cols = np.flatnonzero(m.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=float)


def box_iou(a: Any, b: Any) -> np.ndarray | float:
    """IoU of boxes (..., 4) as (x0, y0, x1, y1), broadcast against each other. A box with a nan
    (an empty prediction) or without area scores 0 (two empty boxes too: MoCA frames always
    have an object). Returns an array of the leading shape, or a float for single boxes."""
    a, b = _numpy(a).astype(float), _numpy(b).astype(float)
    if a.shape[-1] != 4 or b.shape[-1] != 4:
        raise ValueError(f"expected boxes (..., 4) as (x0, y0, x1, y1), got shapes {a.shape} and {b.shape}")
    width = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
    height = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
    intersection = np.clip(width, 0, None) * np.clip(height, 0, None)
    area_a = np.clip(a[..., 2] - a[..., 0], 0, None) * np.clip(a[..., 3] - a[..., 1], 0, None)
    area_b = np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)
    union = area_a + area_b - intersection
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = np.where(union > 0, intersection / np.where(union > 0, union, 1), 0.0)
    scores = np.nan_to_num(scores, nan=0.0)
    return float(scores) if scores.ndim == 0 else scores


def moca_box_scores(
    prob_maps: Any,
    gt_boxes: Any,
    motion_types: str | Sequence[str],
    clip_ids: Sequence[Any] | None = None,
    threshold: float = 0.5,
    thresholds: Sequence[float] = SR_THRESHOLDS,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Box IoU per frame on MoCA, and a summary by motion type.

    ``prob_maps`` (N, H, W) or (N, 1, H, W) foreground probabilities; ``gt_boxes`` (N, 4) as
    (x0, y0, x1, y1); ``motion_types`` one label per frame (or one for all), e.g. "locomotion",
    "deformation", "static"; ``clip_ids`` one per frame (optional). Each map is binarised by
    :func:`moca_binarize`, boxed by :func:`mask_to_box` (largest component) and scored by
    :func:`box_iou`.

    Returns ``(frames, summary)``: ``frames`` has one row per frame (frame, clip, motion_type,
    box_iou, inverted, x0, y0, x1, y1 of the predicted box); ``summary`` one row per motion type
    and ``"all"`` (n_frames, mIoU, the success rates of :func:`success_rates`). mIoU is per clip
    first when ``clip_ids`` are given (:func:`mean_iou`); success rates count frames.
    """
    maps = _frames(prob_maps)
    n = len(maps)
    boxes = _numpy(gt_boxes).astype(float).reshape(-1, 4) if n else np.zeros((0, 4))
    types = [motion_types] * n if isinstance(motion_types, str) else list(motion_types)
    clips = list(clip_ids) if clip_ids is not None else [None] * n
    if not (len(boxes) == len(types) == len(clips) == n):
        raise ValueError(
            f"got {n} probability maps, {len(boxes)} boxes, {len(types)} motion types and {len(clips)} clip ids"
        )
    masks, inverted = moca_binarize(maps, threshold)
    predicted = mask_to_box(masks) if n else np.zeros((0, 4))
    scores = box_iou(predicted, boxes) if n else np.zeros(0)
    frames = pd.DataFrame({
        "frame": np.arange(n), "clip": clips, "motion_type": types, "box_iou": np.atleast_1d(scores),
        "inverted": inverted, "x0": predicted[:, 0], "y0": predicted[:, 1], "x1": predicted[:, 2],
        "y1": predicted[:, 3],
    })
    rows = []
    groups = [("all", frames)] + [(str(name), group) for name, group in frames.groupby("motion_type", sort=True)]
    for name, group in groups:
        if group.empty:
            continue
        row = {"motion_type": name, "n_frames": len(group),
               "mIoU": mean_iou(group["box_iou"].to_numpy(), None if clip_ids is None else group["clip"].tolist())}
        row.update(success_rates(group["box_iou"].to_numpy(), thresholds).to_dict())
        rows.append(row)
    summary = pd.DataFrame(rows).set_index("motion_type") if rows else pd.DataFrame()
    return frames, summary


# ---------------------------------------------------------------------------------------------
# Baselines that ignore the input


def constant_baseline(train_masks: Any) -> np.ndarray:
    """The best constant mask (H, W) from training masks (N, H, W) or (N, 1, H, W): foreground
    where a pixel is foreground in more than half of the training frames, or all background if
    that scores a higher mean IoU on the training frames (empty frames score 1 against it)."""
    masks = _binary(_frames(train_masks))
    if len(masks) == 0:
        raise ValueError("constant_baseline needs at least one training mask")
    majority = masks.mean(axis=0) > 0.5
    background = np.zeros_like(majority)
    if float(np.mean(iou(background, masks))) > float(np.mean(iou(majority, masks))):
        return background
    return majority


def centre_prior_baseline(train_masks: Any, threshold: float | None = None) -> np.ndarray:
    """The mean training mask thresholded: foreground where more than ``threshold`` of the training
    frames (N, H, W) are foreground. With ``threshold=None`` the threshold (0.05, 0.10, ..., 0.95)
    that scores the highest mean IoU on the training frames. Returns a boolean (H, W) mask."""
    masks = _binary(_frames(train_masks))
    if len(masks) == 0:
        raise ValueError("centre_prior_baseline needs at least one training mask")
    frequency = masks.mean(axis=0)
    if threshold is not None:
        return frequency > threshold
    candidates = np.round(np.arange(0.05, 0.96, 0.05), 2)
    scores = [float(np.mean(iou(frequency > t, masks))) for t in candidates]
    return frequency > candidates[int(np.argmax(scores))]
