"""The layer explorer: a static figure always, interactive widgets only outside batch runs."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import IPython.display
import pytest
import torch

from stdyn import measure, plots
from stdyn.core.planted import PlantedNet, moving_object_clips

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def measurement():
    net = PlantedNet().eval()
    return measure(net, moving_object_clips(16, frames=4, size=16, seed=0), ["readout"], progress=False)


@pytest.mark.parametrize("batch_run", [True, False])
def test_explore_draws_a_figure_and_widgets_only_outside_batch_runs(measurement, monkeypatch, batch_run):
    import ipywidgets

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda *objects: shown.extend(objects))
    monkeypatch.setattr(plots.plt, "show", lambda: shown.append("figure"))
    if batch_run:
        monkeypatch.setenv(plots.NO_WIDGETS, "1")
    else:
        monkeypatch.delenv(plots.NO_WIDGETS, raising=False)
    plots.explore(measurement)
    assert shown[0] == "figure"
    widgets = [o for o in shown if isinstance(o, ipywidgets.Widget)]
    assert len(widgets) == (0 if batch_run else 1)
    plots.plt.close("all")


def test_style_gallery_fidelity_and_decorrelation_figures():
    import pandas as pd

    from stdyn.core.fidelity import decorrelation, fidelity, world_clips
    from stdyn.core.stylize import STYLES

    clips, masks, flow = world_clips(4, frames=4, size=16, seed=0)
    fig = plots.style_gallery(clips[:2], frames=[0, 3], title="styles")
    assert len(fig.axes) == (1 + len(STYLES)) * 2 * 2
    assert plots.style_gallery(clips[0]).axes[0].get_title() == "t=0"
    frame = pd.concat([fidelity(clips, masks, flow).assign(size=16), fidelity(clips, masks, flow).assign(size=32)])
    assert len(plots.fidelity_grid(frame).axes) == 2
    ax = plots.decorrelation_heatmap(decorrelation(clips))
    assert len(ax.get_yticklabels()) == 6
    plots.plt.close("all")


def test_segmentation_chapter_figures_draw_every_panel_and_curve():
    import matplotlib.pyplot as plt
    import pandas as pd

    maps = {"davis": torch.rand(8, 8), "tao": torch.rand(8, 8)}
    fig = plots.centre_bias_maps(maps, {"davis": 0.9, "tao": 0.4})
    assert [ax.get_title() for ax in fig.axes[:2]] == ["davis\ncentral share 0.90", "tao\ncentral share 0.40"]
    curves = pd.DataFrame([{"layer": layer, "world": world, "epoch": e, "factor": f, "percent": 10.0 + e,
                            "percent_lo": 9.0 + e, "percent_hi": 11.0 + e}
                           for layer in ("fusion2", "fusion5") for world in ("davis", "davis+ytvos")
                           for e in range(3) for f in ("dynamic", "static")])
    settled = pd.DataFrame({"layer": ["fusion2"], "world": ["davis"], "factor": ["static"], "settled at epoch": [1]})
    fig = plots.epoch_grid(curves, row="layer", col="world", settled=settled)
    assert len(fig.axes) == 4 and all(len(ax.lines) >= 2 for ax in fig.axes)
    assert sum(len(ax.lines) for ax in fig.axes) == 9  # 2 curves per panel and one settling line
    runs = pd.DataFrame([{"layer": "fusion2", "kind": kind, "k": k, "draw": d, "mIoU": 0.5 - 0.1 * k}
                         for kind, draws in (("static", 1), ("dynamic", 1), ("random", 3))
                         for k in (0, 1, 2) for d in range(draws)])
    fig = plots.removal_grid(runs, y_label="moca mIoU")
    assert len(fig.axes) == 1 and len(fig.axes[0].lines) == 3 and fig.axes[0].get_ylabel() == "moca mIoU"
    plt.close("all")
