# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Unit removal: which units the accuracy depends on
#
# > *"What impact do static and dynamic units have on performance?"* (Kowal et al., Sec. 5)
#
# The paper ranks the units (channels) of the final layer of a SlowFast model trained on SSv2
# by how much static or dynamic information each one encodes (the unit-wise score, eq. 2),
# zeroes the top-*k* of each ranking at inference, and compares the drop in top-1 accuracy
# with removing *k* random units (its Fig. 11, top left). Removing the most dynamic units hurts
# most, *"which may be because the SlowFast model encodes a significant amount of dynamic
# information in the fast branch and dynamics are important for the SSv2 dataset"*.
#
# We repeat the experiment on the `ssv2` world, where a single frame says nothing about the
# class. **Which layer.** We remove units of `head.pool`, the pooled features that the
# classifier reads: the slow branch's last stage followed by the fast branch's, concatenated.
# It is the network's final layer in the paper's sense (every class score is a linear function
# of it, so nothing downstream can make up for a removed unit), it holds both branches in one
# ranking, and zeroing a channel there is the same as zeroing that channel of its branch's last
# stage, because pooling is linear per channel. It is also where StaticDropout acts (next
# chapter).

# %% tags=["parameters"]
profile = "quick"  # smoke | quick | full
seed = 0
device = None  # None: the profile's device
task = "all"  # "action", "vos" (video object segmentation) or "all"
model = "slowfast"
world = "ssv2"
layer = "head.pool"
rank_by = "score"  # "score": by s_F alone (the paper); "margin": by s_F minus the other factor's score
removed_fractions = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9]  # k as a fraction of the layer's channels
vos_layers = ["fusion2", "fusion3", "fusion5"]  # MATNet's fusion layers whose units are removed (AVOS part)
vos_fractions = [0.0, 0.1, 0.25, 0.5]  # AVOS: k as a fraction of each fusion layer's channels
threshold = 0.5

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display

from stdyn import experiments, interventions, plots
from stdyn.book.parts import select_parts
from stdyn.core import claims
from stdyn.data import worlds
from stdyn.experiments import fusion, testbed, vos
from stdyn.training import profiles, zoo

parts = select_parts(task, ["action", "vos"])
P = profiles.get(profile)
random_draws = {"smoke": 5, "quick": 10, "full": 20}.get(P.name, 10)  # random baseline: draws per k
vos_draws = {"smoke": 2, "quick": 5, "full": 20}.get(P.name, 5)  # AVOS: each removal scores every moca frame
pd.Series({"model / world": f"{model} on {world}: {worlds.describe(world).splitlines()[0]}",
           "clips": f"{P.n_train} train / {P.n_measure} measured / {P.n_val} evaluated, 3x{P.frames}x{P.size}x{P.size}",
           "training": f"{P.epochs} epochs, {P.optimizer}, lr {P.lr}, batch {P.batch_size}",
           "random baseline": f"{random_draws} draws of random units per k",
           "bootstrap replicates": experiments.BOOTSTRAP[P.name]}, name=f"profile {profile}").to_frame()

# %% [markdown]
# ## The model and its units
#
# The model comes from the model cache (the same SlowFast as in the training-dynamics chapter);
# its units are measured on stylized held-out clips. Its top-1 on those clips in each style
# tells how far its features follow a clip through a change of style, which the dynamic scores
# need (see the training-dynamics chapter).


# %% [markdown]
# The testbed checks (chapter 0) come first: where they fail, this chapter's verdicts about
# dynamics read "not tested".

# %%
# part: action
bed = testbed.validate(profile, seed=seed, device=device)
bed.banner()

# %%
# part: action
entry = zoo.get(model, world, profile=P, seed=seed, device=device)
measurement = experiments.measure_entry(entry, world, P, layers=[layer], seed=seed)
result = measurement.unitwise(layer, threshold)
n_channels = len(result.categories)
ks = sorted({int(round(f * n_channels)) for f in removed_fractions})
val = zoo.datasets(world, P)[1]
chance = 100 / len(entry.classes)
style_check = experiments.entry_style_accuracy(entry, world, P)
pd.Series({"val top-1 (%)": round(100 * entry.val_accuracy, 1), "chance (%)": round(chance, 1),
           "top-1 on stylized clips (%)": ", ".join(f"{s} {v:.0f}" for s, v in style_check.drop("original").items()),
           "channels in " + layer: n_channels, "k removed": ks}, name=model).to_frame()

# %%
# part: action
scores = result.to_frame()
if model == "slowfast":  # head.pool concatenates the slow branch's channels, then the fast branch's
    slow_channels = [s.channels for s in entry.model.stages if s.kind == "slow"][-1]
    scores["branch"] = np.where(scores["channel"] < slow_channels, "slow", "fast")
fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.8))
plots.unit_scatter(scores, threshold, ax=axes[0], title=f"{model} {layer}: unit scores")
plots.unit_bars(result.summary(), ax=axes[1], title=f"categories (lambda = {threshold})")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Removing the top-*k* units (paper Fig. 11, top left)
#
# Static and dynamic rankings order the channels by their score for that factor (`rank_by`);
# the random baseline draws `random_draws` random orders, and removes the first *k* of each.
# The band shows the range of the random draws, the line their mean.

# %%
# part: action
rankings = {"static": interventions.rank_units(result, "static", by=rank_by),
            "dynamic": interventions.rank_units(result, "dynamic", by=rank_by),
            "random": interventions.random_units(n_channels, n_channels, draws=random_draws, seed=seed)}
curve = interventions.removal_correct(entry.model, val, layer, rankings, ks, batch_size=P.measure_batch_size,
                                      device=entry.device)
curve["accuracy"] *= 100
random_runs = curve[curve["kind"] == "random"].groupby("k")["accuracy"]
summary = pd.DataFrame({
    "static": curve[curve["kind"] == "static"].set_index("k")["accuracy"],
    "dynamic": curve[curve["kind"] == "dynamic"].set_index("k")["accuracy"],
    "random mean": random_runs.mean(), "random min": random_runs.min(), "random max": random_runs.max()})

fig, ax = plt.subplots(figsize=(5.6, 3.4))
ax.fill_between(summary.index, summary["random min"], summary["random max"], color="#888888", alpha=0.25, lw=0)
ax.plot(summary.index, summary["random mean"], color="#555555", marker="o", ms=3,
        label=f"random ({random_draws} draws)")
for kind in ("dynamic", "static"):
    ax.plot(summary.index, summary[kind], color=plots.COLORS[kind], marker="o", ms=4, label=f"top-k {kind}")
ax.axhline(chance, color="k", lw=0.6, ls=":", label="chance")
ax.set(xlabel=f"units removed from {layer} (k of {n_channels})", ylabel="val top-1 (%)", ylim=(0, 100),
       title=f"{model} on {world}: top-k unit removal")
ax.spines[["top", "right"]].set_visible(False)
ax.legend(frameon=False, fontsize="small")
plt.show()
summary.round(1)

# %% [markdown]
# Where the removed units come from: the share of the top-*k* units of each ranking that belong
# to the fast branch (a random set takes its share of the channels).

# %%
# part: action
if "branch" in scores:
    fast = scores["branch"].to_numpy() == "fast"
    shown_ks = [k for k in ks if k > 0]
    display(pd.DataFrame({f"top-k {kind} (% fast)": [100 * fast[rankings[kind][:k]].mean() for k in shown_ks]
                          for kind in ("static", "dynamic")} | {"all channels (% fast)": 100 * fast.mean()},
                         index=pd.Index(shown_ks, name="k")).round(1))

# %% [markdown]
# ## Claims
#
# A ranking is compared with the random baseline over the whole curve: the mean top-1 over the
# removed *k* (the area under the removal curve). Its 95% interval comes from a bootstrap over
# the evaluated clips (the same resamples for every ranking, so differences are paired); the
# random baseline's also resamples its `random_draws` draws, then clips. Per *k*, the table above
# gives the details.
#
# Where the static curve falls fastest instead of the dynamic one, two things are worth
# knowing. The dynamic scores come from stylized pairs, and a model near chance on stylized
# clips (the table at the top) cannot show agreement between two styles of a clip, so its
# dynamic ranking says little about motion. The static ranking, by contrast, picks units whose
# response differs between clips and survives frame shuffling, which a classifier can use even
# on this world: the set of frames, without their order, tells which pair of opposite motions a
# clip belongs to.

# %%
# part: action
area = experiments.removal_area(curve, [k for k in ks if k > 0], replicates=experiments.BOOTSTRAP[P.name], seed=seed)
board = claims.Board(chapter="05", seeds=1)
board.gate("dynamics", bed.dynamics_ok, "testbed: " + "; ".join(bed.failures()))
board.competence({model: 100 * entry.val_accuracy}, chance)
board.add("removing the top-k dynamic units hurts SSv2 accuracy most "
          "(SlowFast, final layer; mean top-1 over the removed k)",
          claims.all_of({"static vs dynamic": claims.exceeds(area["static"], area["dynamic"]),
                         "random vs dynamic": claims.exceeds(area["random"], area["dynamic"])}),
          paper="dynamic below static and random", needs=["dynamics", model])
board.add("removing units ranked by the metric hurts more than removing random units (mean top-1 over the removed k)",
          claims.all_of({f"random vs {kind}": claims.exceeds(area["random"], area[kind])
                         for kind in ("static", "dynamic")}),
          paper="both rankings below random", needs=["dynamics", model])
board.show()

# %% [markdown]
# ## Video object segmentation: removing MATNet's fusion units (paper Fig. 11, bottom)
#
# The paper removes the top-*k* static and dynamic units of three fusion layers of MATNet
# (trained on DAVIS16 and YouTube-VOS) and scores mIoU on MoCA, whose camouflaged animals only
# motion reveals. At intermediate layers a random set of units can hit a few units the network
# cannot do without, so its random baseline draws *x*% of a layer's units among the (*x* + 5)%
# least biased toward the layer's dominant factor. In every fusion layer, the factor with the
# largest impact is the one the layer is most biased toward.
#
# Here MATNet comes from chapter 02 (trained on `davis+ytvos`), its fusion units are ranked on
# held-out `davis`, and each removal is scored by the mIoU over the held-out `moca` clips.

# %%
# part: vos
avos_bed = fusion.avos_testbed(P, seed=seed, device=device)
avos_bed.banner()

# %%
# part: vos
avos = vos.vos_study({"MATNet": vos.ARCHITECTURES["MATNet"]}, P, seed=seed, score_worlds=(vos.HELD_OUT,),
                     styled_worlds=(), device=device)
matnet = avos.entries["MATNet"]
camouflage = zoo.measure_set(vos.CAMOUFLAGE, P)
runs, fusion_table = vos.removal_table(matnet, avos.measurements["MATNet"], vos_layers, camouflage,
                                       fractions=vos_fractions, draws=vos_draws, seed=seed, threshold=threshold)
floor = float(avos.baselines.query("world == @vos.HELD_OUT")["mIoU"].max())
fusion_table.assign(**{"held-out davis mIoU": avos.miou("MATNet", vos.HELD_OUT).value,
                       "moca mIoU": float(runs.query("k == 0")["mIoU"].iloc[0])}).round(3)

# %%
# part: vos
plots.removal_grid(runs, score="mIoU", by="layer", x_label="units removed (k)", y_label="moca mIoU", ylim=(0, 1),
                   title="MATNet: top-k unit removal from the fusion layers")
plt.show()

# %% [markdown]
# ### Claims (AVOS)
#
# Each layer's dominant factor is the one with the larger layer-wise percent (the table above).
# The areas are the mean mIoU over the removed *k* > 0, with 95% intervals from a bootstrap over
# the `moca` clips (the random baseline also resamples its draws); a lower area is a larger impact.

# %%
# part: vos
avos_board = claims.Board(chapter="05", seeds=1)
avos_board.gate("AVOS testbed", avos_bed.ok, "AVOS testbed: " + "; ".join(avos_bed.failures()))
avos_board.competence({"MATNet": avos.miou("MATNet", vos.HELD_OUT).value}, floor,
                      metric="held-out davis mIoU", baseline="the best input-free baseline")
impact = {}
for row in fusion_table.itertuples():
    layer_runs = runs[runs["layer"] == row.layer]
    area = experiments.removal_area(layer_runs, sorted(k for k in layer_runs["k"].unique() if k > 0),
                                    column="clip_miou", replicates=experiments.BOOTSTRAP[P.name], seed=seed)
    other = "static" if row.dominant == "dynamic" else "dynamic"
    impact[f"{row.layer} ({row.dominant}-biased)"] = claims.exceeds(area[other], area[row.dominant])
avos_board.add("AVOS: in every fusion layer, removing units of the factor the layer is most biased toward hurts "
               "moca mIoU most (mean mIoU over the removed k)", claims.all_of(impact),
               paper="the dominant factor has the largest impact in every fusion layer", needs=["AVOS testbed", "MATNet"])
avos_board.show()
