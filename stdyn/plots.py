"""Figures in the style of the paper's Fig. 3, drawn from the tidy frames of ``Measurement``."""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from stdyn.core.estimator import CATEGORIES
from stdyn.core.fidelity import KEPT
from stdyn.core.stylize import STYLES, stylize

NO_WIDGETS = "STDYN_NO_WIDGETS"  # set: explore() draws no interactive widgets (batch runs)
COLORS = {
    "dynamic": "#2c6fbb",
    "static": "#d1453b",
    "joint": "#8e5bb5",
    "residual": "#b8b8b8",
    "dead": "#404040",
    "identical": "#e0e0e0",
}


def _axes(ax: plt.Axes | None, size: tuple[float, float]) -> plt.Axes:
    return ax if ax is not None else plt.subplots(figsize=size)[1]


def layer_bars(frame: pd.DataFrame, ax: plt.Axes | None = None, title: str | None = None,
               x: str = "layer", legend: bool = True) -> plt.Axes:
    """Dynamic and static percentages per layer (from ``Measurement.to_frame()``), with intervals."""
    data = frame[frame["factor"].isin(["dynamic", "static"])].copy()
    data["percent"] = 100 * data["fraction"]
    data["layer"] = data[x].astype(str)
    layers = list(dict.fromkeys(data["layer"]))
    ax = _axes(ax, (max(4.0, 0.9 * len(layers) + 1.5), 3.2))
    width = 0.38
    x = np.arange(len(layers))
    for offset, factor in ((-width / 2, "dynamic"), (width / 2, "static")):
        rows = data[data["factor"] == factor].set_index("layer").loc[layers]
        lo, hi = 100 * rows["fraction_lo"].to_numpy(), 100 * rows["fraction_hi"].to_numpy()
        err = None
        if np.isfinite(lo).all():
            err = np.vstack([rows["percent"] - lo, hi - rows["percent"]]).clip(min=0)
        ax.bar(x + offset, rows["percent"], width, yerr=err, color=COLORS[factor], label=factor.capitalize(),
               capsize=2, error_kw={"lw": 0.8})
    crowded = sum(len(layer) for layer in layers) > 6 * len(layers) + 4
    ax.set_xticks(x, layers, rotation=30 if crowded else 0, ha="right" if crowded else "center")
    ax.set_ylabel("units encoding factor (%)")
    ax.set_ylim(0, max(50.0, float(data["percent"].max()) + 8))
    if legend:
        ax.legend(frameon=False, ncol=2, loc="upper left")
    sns.despine(ax=ax)
    if title:
        ax.set_title(title)
    return ax


def _grid(n: int, col_wrap: int, size: tuple[float, float]) -> tuple[plt.Figure, np.ndarray]:
    cols = min(n, col_wrap)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size[0] * cols, size[1] * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes.flat


def layer_grid(frame: pd.DataFrame, by: str = "series", order: Sequence[str] | None = None,
               col_wrap: int = 4, title: str | None = None) -> plt.Figure:
    """One panel of :func:`layer_bars` per model (or branch), stages on the x axis (paper Fig. 3 left)."""
    order = list(order) if order is not None else list(dict.fromkeys(frame[by]))
    fig, axes = _grid(len(order), col_wrap, (3.0, 2.6))
    top = float(100 * frame.loc[frame["factor"] != "identical", "fraction_hi"].max())
    for i, (ax, name) in enumerate(zip(axes, order)):
        layer_bars(frame[frame[by] == name], ax=ax, title=name, x="stage", legend=i == 0)
        ax.set_ylim(0, max(50.0, top + 5))
        ax.set_xlabel("stage")
        if i % col_wrap:
            ax.set_ylabel("")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def unit_grid(units: pd.DataFrame, by: str = "series", order: Sequence[str] | None = None,
              col_wrap: int = 3, title: str | None = None) -> plt.Figure:
    """One panel of :func:`unit_bars` per model (or branch), one bar per stage (paper Fig. 3 right)."""
    order = list(order) if order is not None else list(dict.fromkeys(units[by]))
    n_stages = units.groupby(by)["stage"].nunique().max()
    fig, axes = _grid(len(order), col_wrap, (4.2, 0.32 * n_stages + 1.3))
    legend: dict[str, Any] = {}
    for ax, name in zip(axes, order):
        unit_bars(units[units[by] == name], ax=ax, label="stage")
        ax.set_title(name, fontsize="medium", loc="left")
        ax.set_ylabel("stage")
        legend.update(zip(ax.get_legend_handles_labels()[1], ax.get_legend_handles_labels()[0]))
        ax.get_legend().remove()
    fig.legend(legend.values(), legend.keys(), loc="upper center", ncol=len(legend), frameon=False,
               bbox_to_anchor=(0.5, 0.97 if title else 1.0))
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 0.92 if title else 0.95))
    return fig


def unit_bars(units: pd.DataFrame, ax: plt.Axes | None = None, title: str | None = None,
              label: str = "layer") -> plt.Axes:
    """Stacked horizontal bars of unit categories per layer (from ``Measurement.units_frame()``)."""
    table = units.pivot_table(index=label, columns="category", values="percent", sort=False).fillna(0.0)
    table = table.reindex(columns=[c for c in CATEGORIES if c in table.columns])
    if "dead" in table and not table["dead"].any():
        table = table.drop(columns="dead")
    ax = _axes(ax, (6.0, 0.45 * len(table) + 1.2))
    left = np.zeros(len(table))
    for category in table.columns:
        ax.barh(table.index.astype(str), table[category], left=left, color=COLORS[category],
                label=category.capitalize(), height=0.7)
        left += table[category].to_numpy()
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("units (%)")
    ax.legend(frameon=False, ncol=len(table.columns), loc="lower center", bbox_to_anchor=(0.5, 1.0))
    sns.despine(ax=ax)
    if title:
        ax.set_title(title, pad=24)
    return ax


def unit_scatter(frame: pd.DataFrame, threshold: float = 0.5, ax: plt.Axes | None = None,
                 title: str | None = None) -> plt.Axes:
    """Each channel's static vs dynamic score (from ``UnitwiseResult.to_frame()``), by category."""
    ax = _axes(ax, (4.2, 4.0))
    alive = frame[frame["category"] != "dead"]
    sns.scatterplot(data=alive, x="static", y="dynamic", hue="category", palette=COLORS, ax=ax, s=28,
                    hue_order=[c for c in CATEGORIES if c in set(alive["category"])])
    ax.axvline(threshold, color="k", lw=0.8, ls="--")
    ax.axhline(threshold, color="k", lw=0.8, ls="--")
    low = min(-0.1, float(alive[["static", "dynamic"]].min().min()) - 0.05)
    ax.set(xlim=(low, 1.05), ylim=(low, 1.05), xlabel="static score $s_{static}$", ylabel="dynamic score $s_{dynamic}$")
    ax.legend(frameon=False, fontsize="small")
    sns.despine(ax=ax)
    if title:
        ax.set_title(title)
    return ax


def clip_strip(clips: Sequence[torch.Tensor], labels: Sequence[str], frames: Sequence[int] | None = None,
               title: str | None = None) -> plt.Figure:
    """Rows of frames, one row per clip (3, T, H, W), labelled on the left."""
    n_frames = clips[0].shape[1]
    frames = list(frames) if frames is not None else list(np.linspace(0, n_frames - 1, min(n_frames, 6)).astype(int))
    fig, axes = plt.subplots(len(clips), len(frames), figsize=(1.25 * len(frames) + 1.2, 1.25 * len(clips)),
                             squeeze=False)
    for row, (clip, label) in enumerate(zip(clips, labels)):
        for col, t in enumerate(frames):
            ax = axes[row, col]
            ax.imshow(clip[:, t].permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"frame {t}", fontsize="small")
        axes[row, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig



def segmentation_strip(rgb: torch.Tensor, flow_image: torch.Tensor, masks: torch.Tensor,
                       predictions: dict[str, torch.Tensor], row_labels: Sequence[str] | None = None,
                       title: str | None = None) -> plt.Figure:
    """One row per frame: the RGB frame, its flow image, the true mask and each model's predicted
    foreground probability. ``rgb`` and ``flow_image`` are (N, 3, H, W), ``masks`` and each
    prediction (N, 1, H, W) or (N, H, W)."""
    columns = {"frame": rgb, "flow": flow_image, "mask": masks, **predictions}
    n = len(rgb)
    fig, axes = plt.subplots(n, len(columns), figsize=(1.25 * len(columns) + 1.2, 1.3 * n + 0.4), squeeze=False)
    for col, (name, images) in enumerate(columns.items()):
        for row in range(n):
            ax = axes[row, col]
            image = images[row].detach().float().cpu()
            if image.dim() == 3 and image.shape[0] == 3:
                ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            else:
                ax.imshow(image.reshape(image.shape[-2:]).numpy(), cmap="gray", vmin=0, vmax=1,
                          interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize="small")
        if row_labels is not None:
            for row, label in enumerate(row_labels):
                axes[row, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def score_bars(table: pd.DataFrame, order: Sequence[str] | None = None, metric: str = "mIoU",
               ax: plt.Axes | None = None, title: str | None = None) -> plt.Axes:
    """Bars of a score per model, without and with flip side by side, with interval whiskers
    (columns model, flip, ``metric``, ``{metric}_lo``, ``{metric}_hi``)."""
    order = list(order) if order is not None else list(dict.fromkeys(table["model"]))
    ax = _axes(ax, (1.0 * len(order) + 1.5, 3.2))
    for offset, (with_flip, part) in zip((-0.2, 0.2), table.groupby("flip", sort=True)):
        part = part.set_index("model").reindex(order)
        errors = np.abs(part[[f"{metric}_lo", f"{metric}_hi"]].to_numpy().T - part[metric].to_numpy())
        ax.bar(np.arange(len(order)) + offset, part[metric], 0.4, yerr=np.nan_to_num(errors), capsize=2,
               label="flip" if with_flip else "no flip", color="#2c6fbb" if with_flip else "#9dbfe4")
    ax.set_xticks(range(len(order)), order, rotation=20)
    ax.set(ylabel=metric, ylim=(0, 1))
    ax.legend(frameon=False)
    sns.despine(ax=ax)
    if title:
        ax.set_title(title)
    return ax

def centre_bias_maps(maps: dict[str, torch.Tensor], concentration: dict[str, float] | None = None,
                     title: str | None = None) -> plt.Figure:
    """Centre-bias maps (H, W) side by side (paper Fig. 8, right), each titled with its world and,
    if given, the share of its mass in the central window."""
    fig, axes = plt.subplots(1, len(maps), figsize=(2.3 * len(maps) + 0.8, 2.6), squeeze=False)
    image = None
    for ax, (world, bias) in zip(axes[0], maps.items()):
        image = ax.imshow(bias.detach().float().cpu().numpy(), cmap="magma", vmin=0, vmax=1, interpolation="nearest")
        label = world if concentration is None else f"{world}\ncentral share {concentration[world]:.2f}"
        ax.set_title(label, fontsize="small")
        ax.set_xticks([])
        ax.set_yticks([])
    if image is not None:
        fig.colorbar(image, ax=list(axes[0]), fraction=0.025, pad=0.02, label="mask frequency (max = 1)")
    if title:
        fig.suptitle(title)
    return fig


def epoch_grid(curves: pd.DataFrame, row: str = "series", col: str = "world", settled: pd.DataFrame | None = None,
               title: str | None = None) -> plt.Figure:
    """Dynamic and static percent over epochs with interval bands, one panel per (``row``, ``col``)
    value (paper Fig. 10). ``curves`` has columns ``row``, ``col``, epoch, factor, percent,
    percent_lo, percent_hi; ``settled`` (``row``, ``col``, factor, "settled at epoch") adds a
    dotted line at each curve's settling epoch."""
    from matplotlib.ticker import MaxNLocator

    rows, cols = list(dict.fromkeys(curves[row])), list(dict.fromkeys(curves[col]))
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(3.1 * len(cols), 2.2 * len(rows)), squeeze=False,
                             sharex=True, sharey=True)
    for i, row_value in enumerate(rows):
        for j, col_value in enumerate(cols):
            ax = axes[i, j]
            for factor in ("dynamic", "static"):
                curve = curves[(curves[row] == row_value) & (curves[col] == col_value) & (curves["factor"] == factor)]
                curve = curve.sort_values("epoch")
                ax.plot(curve["epoch"], curve["percent"], color=COLORS[factor], marker="o", ms=3,
                        label=factor.capitalize())
                ax.fill_between(curve["epoch"], curve["percent_lo"], curve["percent_hi"], color=COLORS[factor],
                                alpha=0.2, lw=0)
                if settled is not None:
                    at = settled[(settled[row] == row_value) & (settled[col] == col_value)
                                 & (settled["factor"] == factor)]["settled at epoch"]
                    if len(at):
                        ax.axvline(at.iloc[0], color=COLORS[factor], ls=":", lw=1.2)
            sns.despine(ax=ax)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if i == 0:
                ax.set_title(str(col_value))
            if j == 0:
                ax.set_ylabel(f"{row_value}\nunits (%)")
            if i == len(rows) - 1:
                ax.set_xlabel("epoch")
    axes[0, 0].legend(frameon=False, fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def removal_grid(runs: pd.DataFrame, score: str = "mIoU", by: str = "layer", x_label: str = "units removed (k)",
                 y_label: str | None = None, ylim: tuple[float, float] | None = None,
                 title: str | None = None) -> plt.Figure:
    """Score against the number of removed units, one panel per ``by`` value (paper Fig. 11): the
    top-k static and dynamic curves, and the random draws' mean with their range as a band.
    ``runs`` has columns ``by``, kind, k, draw and ``score``."""
    panels = list(dict.fromkeys(runs[by]))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels) + 0.4, 3.0), squeeze=False, sharey=True)
    for ax, panel in zip(axes[0], panels):
        part = runs[runs[by] == panel]
        random = part[part["kind"] == "random"].groupby("k")[score]
        if len(random):
            summary = random.agg(["mean", "min", "max"])
            ax.fill_between(summary.index, summary["min"], summary["max"], color="#888888", alpha=0.25, lw=0)
            draws = part.loc[part["kind"] == "random", "draw"].nunique()
            ax.plot(summary.index, summary["mean"], color="#555555", marker="o", ms=3, label=f"random ({draws} draws)")
        for kind in ("dynamic", "static"):
            curve = part[part["kind"] == kind].sort_values("k")
            ax.plot(curve["k"], curve[score], color=COLORS[kind], marker="o", ms=4, label=f"top-k {kind}")
        ax.set(title=str(panel), xlabel=x_label)
        if ylim is not None:
            ax.set_ylim(*ylim)
        sns.despine(ax=ax)
    axes[0, 0].set_ylabel(y_label or score)
    axes[0, 0].legend(frameon=False, fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def explore(measurement: Any, thresholds: Sequence[float] = (0.3, 0.4, 0.5, 0.6, 0.7)) -> None:
    """Unit scores and categories of a measured layer, at a threshold.

    Draws the last layer at the default threshold as a plain figure (what a static page shows),
    then an ipywidgets explorer over layer and threshold for readers running the notebook live.
    Batch runs (``$STDYN_NO_WIDGETS`` set, as ``python -m stdyn.book`` does) draw the figure only:
    a static page cannot use the explorer, and notebook executors can block on widget messages.
    """
    import ipywidgets as widgets
    from IPython.display import display

    def show(layer: str, threshold: float) -> None:
        result = measurement.unitwise(layer, threshold)
        fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.8))
        unit_scatter(result.to_frame(), threshold, ax=axes[0], title=layer)
        unit_bars(result.summary(), ax=axes[1], title=f"threshold {threshold}")
        fig.tight_layout()
        plt.show()

    default = 0.5 if 0.5 in thresholds else thresholds[0]
    show(measurement.layers[-1], default)
    if os.environ.get(NO_WIDGETS):
        return
    display(widgets.interactive(
        show, layer=widgets.Dropdown(options=measurement.layers, value=measurement.layers[-1]),
        threshold=widgets.SelectionSlider(options=list(thresholds), value=default),
    ))


FIDELITY_METRICS = {"visibility": "object visibility", "flow_cosine": "flow agreement (cosine)"}


def style_gallery(clips: torch.Tensor, frames: Sequence[int] | None = None, styles: Sequence[str] | None = None,
                  title: str | None = None, cell: float = 1.1) -> plt.Figure:
    """One or a few clips (3, T, H, W) or (B, 3, T, H, W) in [0, 1], clean and in every style.

    Rows: the clean clip, then each style; columns: ``frames`` (default: four spread over the
    clip) of the first clip, then of the next. Pixels are drawn as squares, not smoothed.
    """
    batch = clips[None] if clips.dim() == 4 else clips
    styles = list(styles) if styles is not None else list(STYLES)
    n_frames = batch.shape[2]
    if frames is None:
        frames = sorted(set(np.linspace(0, n_frames - 1, min(n_frames, 4)).astype(int)))
    rows = [("clean", batch)] + [(style, stylize(batch, style)) for style in styles]
    n_cols = len(batch) * len(frames)
    size = (cell * n_cols + 0.9, cell * len(rows) + (0.5 if title else 0.2))
    fig, axes = plt.subplots(len(rows), n_cols, figsize=size, squeeze=False, gridspec_kw={"wspace": 0.04, "hspace": 0.04})
    for r, (name, shown) in enumerate(rows):
        for i in range(len(batch)):
            for j, t in enumerate(frames):
                ax = axes[r, i * len(frames) + j]
                ax.imshow(shown[i, :, t].permute(1, 2, 0).clamp(0, 1).cpu().numpy(), interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(f"clip {i + 1}, t={t}" if len(batch) > 1 else f"t={t}", fontsize="x-small")
        axes[r, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize="small")
    if title:
        fig.suptitle(title)
    fig.subplots_adjust(left=0.9 / size[0], right=0.99, bottom=0.02, top=0.9 if title else 0.95)
    return fig


def fidelity_bars(frame: pd.DataFrame, size: int | None = None, ax: plt.Axes | None = None,
                  title: str | None = None) -> plt.Axes:
    """Each style's visibility and flow agreement as a share of the clean clips' (from
    :func:`stdyn.core.fidelity.fidelity`), with the floors every style must keep at ``size`` (dashed)."""
    styled = frame[(frame["style"] != "clean") & frame["metric"].isin(list(FIDELITY_METRICS))]
    styles = list(dict.fromkeys(styled["style"]))
    ax = _axes(ax, (1.1 * len(styles) + 2.0, 3.6))
    width = 0.38
    x = np.arange(len(styles))
    clean = frame[frame["style"] == "clean"].set_index("metric")["value"]
    palette = dict(zip(FIDELITY_METRICS, ("#2c6fbb", "#e08a2c")))
    floors = KEPT[max([s for s in KEPT if s <= size], default=min(KEPT))] if size is not None else {}
    for k, (metric, label) in enumerate(FIDELITY_METRICS.items()):
        rows = styled[styled["metric"] == metric].set_index("style").loc[styles]
        offset = (k - 0.5) * width
        ax.bar(x + offset, rows["ratio"], width, color=palette[metric],
               label=f"{label} (clean {clean.get(metric, np.nan):.2f})")
        if metric in floors:
            ax.hlines(floors[metric], x[0] + offset - width / 2, x[-1] + offset + width / 2, colors=palette[metric],
                      linestyles="--", lw=1)
    ax.axhline(1.0, color="k", lw=0.6)
    ax.set_xticks(x, styles)
    ax.set_ylim(min(0.5, float(styled["ratio"].min()) - 0.05), 1.08)
    ax.set_ylabel("share of the clean clips'")
    ax.legend(frameon=False, fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=1)
    sns.despine(ax=ax)
    if title:
        ax.set_title(title)
    return ax


def fidelity_grid(frame: pd.DataFrame, title: str | None = None) -> plt.Figure:
    """One panel of :func:`fidelity_bars` per frame size (a ``size`` column in ``frame``)."""
    sizes = sorted(set(frame["size"]))
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.6 * len(sizes), 3.8), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        fidelity_bars(frame[frame["size"] == size], size=size, ax=ax, title=f"{size}x{size} px")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def decorrelation_heatmap(table: pd.DataFrame, ax: plt.Axes | None = None, title: str | None = None) -> plt.Axes:
    """Pearson r of per-clip statistics between every two styles (from
    :func:`stdyn.core.fidelity.decorrelation`): one row per style pair, one column per statistic."""
    pivot = table.assign(pair=table["style_a"] + " / " + table["style_b"]).pivot_table(
        index="pair", columns="statistic", values="r", sort=False)
    pivot = pivot[[c for c in dict.fromkeys(table["statistic"]) if c in pivot.columns]]
    ax = _axes(ax, (1.2 * pivot.shape[1] + 2.5, 0.4 * len(pivot) + 1.2))
    sns.heatmap(pivot, vmin=-1, vmax=1, cmap="RdBu_r", annot=True, fmt=".2f", cbar=False, ax=ax,
                annot_kws={"fontsize": "small"})
    ax.set_xlabel("")
    ax.set_ylabel("")
    if title:
        ax.set_title(title)
    return ax
