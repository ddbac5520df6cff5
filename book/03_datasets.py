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
# # Datasets: which training data teaches dynamics
#
# > *"What effect does the training dataset have on static and dynamic biases?"*
# > (Kowal et al., Sec. 4.2.1)
#
# Diving48 was built to need long-term dynamics, and Something-Something-v2 (SSv2) to need
# motion rather than appearance. The paper finds that models trained on Diving48 encode about
# as much dynamics as on Kinetics, that Diving48 and Kinetics lose little when trained and
# validated on frame-shuffled clips while SSv2 loses a lot, and that SSv2 yields the most
# dynamic units, concluding that SSv2 is the better test of dynamics.
#
# We repeat the study with SlowOnly (a static-leaning architecture) and FastOnly (a
# dynamic-leaning one) on three worlds that stand in for the three datasets:
# `kinetics` (motion classes whose scene layout correlates with the class), `diving48`
# (fine-grained pose sequences whose poses differ by class) and `ssv2` (motion classes in
# opposite pairs; a single frame says nothing about the class).

# %% tags=["parameters"]
profile = "quick"  # smoke | quick | full
seed = 0
device = None  # None: the profile's device
task = "all"  # "action", "vos" (video object segmentation), "vis" (video instance segmentation) or "all"
models = ["slowonly", "fastonly"]
datasets = ["kinetics", "diving48", "ssv2"]
vos_datasets = ["davis", "ytvos", "imagenetvid", "tao"]  # the AVOS training worlds (FusionSeg on each)
vis_datasets = ["ytvis", "ovis"]  # the VIS training worlds (VisTR R50 on each)
threshold = 0.5

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display

from stdyn import experiments, plots
from stdyn.book.parts import select_parts
from stdyn.core import claims
from stdyn.data import worlds
from stdyn.data.worlds import vis as vis_worlds
from stdyn.data.worlds import vos as vos_worlds
from stdyn.experiments import fusion, testbed, vis, vos
from stdyn.training import profiles, zoo

parts = select_parts(task, ["action", "vos", "vis"])
P = profiles.get(profile)
pd.DataFrame({"stands in for": [worlds.describe(w) for w in datasets]}, index=datasets)

# %% [markdown]
# ## Training, on ordered and on frame-shuffled clips
#
# Every model is trained twice per world: on ordinary clips, and on clips whose frames are
# shuffled (for training and validation), which leaves only static information to learn from.


# %% [markdown]
# The testbed checks (chapter 0) come first: where they fail, this chapter's verdicts about
# dynamics read "not tested".

# %%
# part: action
bed = testbed.validate(profile, seed=seed, device=device)
bed.banner()

# %%
# part: action
study = experiments.survey(models, datasets, P, seed=seed, device=device)
shuffled = experiments.survey(models, datasets, P, seed=seed, device=device, shuffle_frames=True,
                              measure_models=False)

# %%
# part: action
rows, accuracy = [], {}
for world in datasets:
    val = zoo.datasets(world, P)[1]
    for model in models:
        normal = experiments.accuracy_estimate(experiments.correct_predictions(study.entries[model, world], val), seed=seed)
        shuffle = experiments.accuracy_estimate(
            experiments.correct_predictions(shuffled.entries[model, world], val), seed=seed)
        accuracy[model, world] = (normal, shuffle)
        drop = experiments.relative_drop(normal, shuffle)
        rows.append({"model": model, "world": world, "top-1 (%)": normal.value, "top-1 shuffled (%)": shuffle.value,
                     "relative drop (%)": drop.value, "drop lo": drop.interval()[0], "drop hi": drop.interval()[1],
                     "chance (%)": 100 / len(study.entries[model, world].classes)})
drops = pd.DataFrame(rows)
drops.round(1)

# %%
# part: action
fig, ax = plt.subplots(figsize=(6, 3.2))
width = 0.38
for i, model in enumerate(models):
    part = drops[drops["model"] == model].set_index("world").loc[datasets]
    x = [j + (i - 0.5) * width for j in range(len(datasets))]
    ax.bar(x, part["relative drop (%)"], width, label=model,
           yerr=[part["relative drop (%)"] - part["drop lo"], part["drop hi"] - part["relative drop (%)"]],
           capsize=3, color=["#7a9cc6", "#2c6fbb"][i % 2])
ax.set_xticks(range(len(datasets)), datasets)
ax.set_ylabel("relative top-1 drop (%)")
ax.set_title("Training and validating on shuffled frames (paper Fig. 6, right)")
ax.axhline(0, color="k", lw=0.6)
ax.legend(frameon=False)
plt.show()

# %% [markdown]
# ## Static and dynamic units at the last layer (paper Fig. 6, left)

# %%
# part: action
layers = study.layers()
last = layers[layers["stage"] == layers.groupby(["model", "world"])["stage"].transform("max")]
table = last[last["factor"] != "identical"].assign(
    value=lambda f: f["percent"].round(1).astype(str) + " [" + f["percent_lo"].round(1).astype(str) + ", "
    + f["percent_hi"].round(1).astype(str) + "]")
table.pivot_table(index="world", columns=["model", "factor"], values="value", aggfunc="first", sort=False).loc[datasets]

# %% [markdown]
# ## Unit-wise analysis at the last layer (paper Fig. 7)

# %%
# part: action
units = study.units(threshold)
last_units = units[units["stage"] == units.groupby(["model", "world"])["stage"].transform("max")]
fig, axes = plt.subplots(1, len(models), figsize=(5.2 * len(models), 2.4), squeeze=False)
for ax, model in zip(axes[0], models):
    plots.unit_bars(last_units[last_units["model"] == model], ax=ax, label="world", title=model)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Claims
#
# Intervals are 95% bootstrap intervals over held-out clips. "Exceeds" reproduces only when the
# interval of the difference lies above zero (contradicted below); "as much as" is an
# equivalence test: the whole interval of the difference must lie within the stated margin. A
# model whose clean top-1 on a world is not at least halfway from chance to the better model's
# makes the claims about that world "not tested"; so does a failed testbed check for the claims
# about dynamics.

# %%
# part: action
board = claims.Board(chapter="03", seeds=1)
board.gate("dynamics", bed.dynamics_ok, "testbed: " + "; ".join(bed.failures()))
for world in datasets:
    board.competence({f"{m} on {world}": 100 * study.entries[m, world].val_accuracy for m in models},
                     100 / len(study.entries[models[0], world].classes))
others = [w for w in datasets if w != "ssv2"]
fig6 = {"slowonly": "Diving48 23.1% vs Kinetics 21.4%", "fastonly": "Diving48 23.8% vs Kinetics 27.3%"}
for model in models:
    on = [f"{model} on {w}" for w in datasets]
    drop = {w: experiments.relative_drop(*accuracy[model, w]) for w in datasets}
    dynamic_units = {w: study.unitwise(model, w, threshold=threshold).percent("dynamic") for w in datasets}
    dynamic = {w: study.layerwise(model, w).percent("dynamic") for w in datasets}
    if "ssv2" in datasets and others:
        board.add(f"{model}: SSv2 loses most when trained on shuffled frames (relative top-1 drop, %)",
                  claims.all_of({f"ssv2 vs {w}": claims.exceeds(drop["ssv2"], drop[w]) for w in others}),
                  paper="SSv2 drop >> Diving48, Kinetics drops", needs=on)
        board.add(f"{model}: SSv2 yields the most dynamic units (last layer, unit-wise, % of channels)",
                  claims.all_of({f"ssv2 vs {w}": claims.exceeds(dynamic_units["ssv2"], dynamic_units[w])
                                 for w in others}),
                  paper="SSv2 most", needs=["dynamics", *on])
    if {"kinetics", "diving48"} <= set(datasets):
        board.similar(f"{model}: Diving48 captures as much dynamics as Kinetics, within 5 points "
                      "(layer-wise, last layer)",
                      dynamic["diving48"], dynamic["kinetics"], margin=5.0, paper=fig6.get(model, "similar"),
                      needs=["dynamics", f"{model} on diving48", f"{model} on kinetics"])
if {"slowonly", "fastonly"} <= set(models):
    board.add("FastOnly captures more dynamic information than SlowOnly on every dataset (layer-wise, last layer)",
              claims.all_of({w: claims.exceeds(study.layerwise("fastonly", w).percent("dynamic"),
                                               study.layerwise("slowonly", w).percent("dynamic")) for w in datasets}),
              paper="FastOnly > SlowOnly everywhere",
              needs=["dynamics", *(f"{m} on {w}" for m in models for w in datasets)])
    if "kinetics" in datasets:
        kinetics_units = study.unitwise("slowonly", "kinetics", threshold=threshold)
        board.at_most("SlowOnly on Kinetics has only static and joint units: dynamic + residual at most 5% of channels",
                      kinetics_units.percent("dynamic") + kinetics_units.percent("residual"), 5.0,
                      paper="static and joint units only", needs=["dynamics", "slowonly on kinetics"])
board.show()

# %% [markdown]
# ## Video object segmentation: the training worlds (paper Table 1, Fig. 8)
#
# The paper trains its FusionSeg (fusion at stages 2 and 5) on each of DAVIS16, YouTube-VOS,
# weakly labelled ImageNet VID and TAO-VOS and measures it on stylized DAVIS16. The model trained
# on TAO-VOS is the least static-biased, the datasets differ little in dynamic bias, and TAO-VOS,
# whose objects are spread most evenly over the frame (the least centre-biased), yields the
# most dynamic units.
#
# Here FusionSeg trains on each AVOS world: `davis` (short clips, salient objects near the
# centre), `ytvos` (more varied), `imagenetvid` (masks from boxes or noisy masks) and `tao`
# (longer clips, objects anywhere, camera motion). Each is measured on the same held-out `davis`
# frames as in chapter 02, and the AVOS testbed of chapter 07 comes first.

# %%
# part: vos
avos_bed = fusion.avos_testbed(P, seed=seed, device=device)
avos_bed.banner()

# %%
# part: vos
avos = vos.dataset_study(P, seed=seed, worlds=vos_datasets, device=device)
held_out = {world: avos.miou(world, vos.HELD_OUT) for world in vos_datasets}
floor = float(avos.baselines.query("world == @vos.HELD_OUT")["mIoU"].max())
pd.DataFrame({"stands in for": {w: vos_worlds.VOS_WORLDS[w].split(";")[0] for w in vos_datasets},
              "own held-out mIoU": {w: avos.entries[w].val_score for w in vos_datasets},
              "held-out davis mIoU": {w: e.value for w, e in held_out.items()},
              "best input-free baseline (davis)": floor}).round(3)

# %% [markdown]
# ### Layer-wise biases (paper Table 1)
#
# Percent of units encoding each factor at fusion layers 5 and 2, with 95% bootstrap intervals
# over the held-out clips.

# %%
# part: vos
fused = avos.layers()
fused = fused[fused["layer"].isin(["fusion5", "fusion2"]) & fused["factor"].isin(["dynamic", "static"])]
table_1 = fused.assign(value=[f"{p:.1f} [{lo:.1f}, {hi:.1f}]" for p, lo, hi in
                              zip(fused["percent"], fused["percent_lo"], fused["percent_hi"])])
table_1.pivot_table(index="model", columns=["layer", "factor"], values="value", aggfunc="first",
                    sort=False).reindex(vos_datasets)

# %% [markdown]
# ### Units and centre bias (paper Fig. 8)
#
# Unit categories at both fusion layers (lambda = 0.5), and each world's centre-bias map: the
# average training mask per pixel, normalised to a maximum of one, titled with the share of its
# mass in the central quarter of the frame (0.25 for objects spread evenly).

# %%
# part: vos
avos_units = avos.units(threshold=threshold)
plots.unit_grid(avos_units, by="model", order=vos_datasets, col_wrap=4,
                title=f"FusionSeg's fusion layers by training world (lambda = {threshold})")
plt.show()
maps = vos.centre_bias_maps(P, vos_datasets)
concentration = {world: vos_worlds.centre_concentration(bias) for world, bias in maps.items()}
plots.centre_bias_maps(maps, concentration, title="Centre bias of the training masks")
plt.show()
display(avos_units[avos_units["category"] == "dynamic"].pivot_table(
    index="model", columns="layer", values="percent", sort=False).reindex(vos_datasets)
    .assign(**{"central share": concentration}).round(2))

# %% [markdown]
# ### Claims (AVOS)
#
# Paired differences over the same held-out clips, 95% bootstrap intervals; "similar" is an
# equivalence test within the stated margin. The least centre-biased world is the one with the
# lowest central share above, found from the maps rather than named in advance.

# %%
# part: vos
least_central = min(concentration, key=concentration.get)
fusion_layers = ("fusion5", "fusion2")
static = {(w, l): avos.layer_estimate(w, l, "static") for w in vos_datasets for l in fusion_layers}
dynamic = {(w, l): avos.layer_estimate(w, l, "dynamic") for w in vos_datasets for l in fusion_layers}
dynamic_units = {(w, l): avos.unit_estimate(w, l, "dynamic", threshold) for w in vos_datasets for l in fusion_layers}
avos_board = claims.Board(chapter="03", seeds=1)
avos_board.gate("AVOS testbed", avos_bed.ok, "AVOS testbed: " + "; ".join(avos_bed.failures()))
avos_board.competence({f"FusionSeg on {w}": e.value for w, e in held_out.items()}, floor,
                      metric="held-out davis mIoU", baseline="the best input-free baseline")
trained = [f"FusionSeg on {w}" for w in vos_datasets]
if "tao" in vos_datasets:
    avos_board.add("AVOS: the model trained on tao has the least static bias (layer-wise, fusion 5 and 2)",
                   claims.all_of({f"{w} vs tao, {l}": claims.exceeds(static[w, l], static["tao", l])
                                  for w in vos_datasets if w != "tao" for l in fusion_layers}),
                   paper="25.8 vs 30.1-34.2 (fusion 5); 23.2 vs 24.6-25.9 (fusion 2)",
                   needs=["AVOS testbed", *trained])
avos_board.add("AVOS: the training worlds differ little in dynamic bias: within 5 points of davis (fusion 5 and 2)",
               claims.all_of({f"{w} - davis, {l}": claims.similar(dynamic[w, l], dynamic["davis", l], margin=5.0)
                              for w in vos_datasets if w != "davis" for l in fusion_layers}),
               paper="25.2-27.8 (fusion 5); 33.0-34.0 (fusion 2)", needs=["AVOS testbed", *trained])
avos_board.add(f"AVOS: the least centre-biased world ({least_central}) yields the most dynamic units "
               "(unit-wise, fusion 5 and 2)",
               claims.all_of({f"{least_central} vs {w}, {l}": claims.exceeds(dynamic_units[least_central, l],
                                                                             dynamic_units[w, l])
                              for w in vos_datasets if w != least_central for l in fusion_layers}),
               paper="TAO-VOS, the least centre-biased, has the most dynamic units", needs=["AVOS testbed", *trained])
avos_board.show()

# %% [markdown]
# ## Video instance segmentation: YouTube-VIS vs OVIS (paper Fig. 9)
#
# > *"The model trained on OVIS contains notably more dynamic bias than the YTVIS trained model in
# > the last layer of the encoder (i.e. layer six) while the biases are similar in the final
# > decoder layer (i.e. layer 12)."* (Sec. 4.2)
#
# OVIS has more instances per video than YouTube-VIS (5.8 vs 1.7) and annotates heavily occluded
# objects. Its stand-in, `ovis`, holds more instances whose paths cross, so they hide one another
# for part of the clip; `ytvis` holds a few instances kept apart. The occlusion statistics of the
# training clips come first: the instances per clip, the share of an instance's area hidden by
# those in front (mean over instances and frames), the instance pairs that overlap at some frame,
# and the share of instance-frames in which an instance is entirely hidden.
#
# A VisTR-like model with the shallow backbone trains on each (the `ytvis` one is chapter 02's)
# and is measured on the same stylized `davis` clips at the last encoder layer (the paper's layer
# 6) and the last decoder layer (layer 12). The VIS testbed of chapter 02 comes first, on both
# models: clearly above the constant tracks, and most of the mask AP kept on restyled clips.

# %%
# part: vis
vis_train = {world: zoo.datasets(world, P)[0] for world in vis_datasets}
pd.DataFrame({world: vis_worlds.occlusion_stats(clips.world).mean() for world, clips in vis_train.items()}).T.round(3)

# %%
# part: vis
vis_labels = {world: f"VisTR R50 on {world}" for world in vis_datasets}
vis_models = vis.vis_study({vis_labels[w]: vis.DATASETS[w] for w in vis_datasets}, P, seed=seed, device=device)
vis_bed = vis.vis_testbed(vis_models)
display(vis_bed.banner(), vis_bed.styled_checks())
vis_models.ap_table().round(3)

# %% [markdown]
# ### Layer-wise and unit-wise (paper Fig. 9)
#
# Dynamic and static percent (95% bootstrap intervals) and unit categories (lambda = 0.5) at the
# last encoder and the last decoder layer of each model.

# %%
# part: vis
first_label = vis_labels[vis_datasets[0]]
encoder_last = vis_models.stage_names(first_label, "encoder")[-1]
decoder_last = vis_models.stage_names(first_label, "decoder")[-1]
vis_layers = vis_models.layers()
vis_layers = vis_layers[vis_layers["layer"].isin([encoder_last, decoder_last])
                        & vis_layers["factor"].isin(["dynamic", "static"])]
vis_units = vis_models.units(threshold)
vis_units = vis_units[vis_units["layer"].isin([encoder_last, decoder_last])]
fig_9 = vis_layers.assign(value=[f"{p:.1f} [{lo:.1f}, {hi:.1f}]" for p, lo, hi in
                                 zip(vis_layers["percent"], vis_layers["percent_lo"], vis_layers["percent_hi"])])
display(fig_9.pivot_table(index="model", columns=["layer", "factor"], values="value", aggfunc="first", sort=False))
plots.unit_grid(vis_units, order=list(vis_labels.values()), col_wrap=2,
                title=f"Units at the last encoder and decoder layers (lambda = {threshold})")
plt.show()
vis_units.pivot_table(index=["model", "layer"], columns="category", values="percent", sort=False).round(1)

# %% [markdown]
# ### Claims (VIS)
#
# Paired differences over the same measured clips, 95% bootstrap intervals; "similar" is an
# equivalence test within 5 points.

# %%
# part: vis
ytvis_label, ovis_label = vis_labels["ytvis"], vis_labels["ovis"]
layer_pct = {(w, l, f): vis_models.layer_estimate(vis_labels[w], l, f)
             for w in vis_datasets for l in (encoder_last, decoder_last) for f in ("dynamic", "static")}
unit_pct = {(w, l, c): vis_models.unit_estimate(vis_labels[w], l, c, threshold)
            for w in vis_datasets for l in (encoder_last, decoder_last) for c in ("dynamic", "static", "joint")}
vis_board = claims.Board(chapter="03", seeds=1)
vis_board.gate("VIS testbed", vis_bed.ok, "VIS testbed: " + "; ".join(vis_bed.failures()))
vis_board.competence({label: vis_models.ap(label).value for label in vis_labels.values()},
                     max(vis_models.baseline(w) for w in vis_datasets), metric="mask AP (own world)",
                     baseline="the best constant tracks")
both = ["VIS testbed", ytvis_label, ovis_label]
vis_board.exceeds(f"VIS: the model trained on ovis is more dynamic at the last encoder layer ({encoder_last}, layer-wise)",
                  layer_pct["ovis", encoder_last, "dynamic"], layer_pct["ytvis", encoder_last, "dynamic"],
                  paper="OVIS notably more dynamic at layer 6", needs=both)
vis_board.add(f"VIS: the two models' biases are similar at the last decoder layer ({decoder_last}), within 5 points",
              claims.all_of({factor: claims.similar(layer_pct["ovis", decoder_last, factor],
                                                    layer_pct["ytvis", decoder_last, factor], margin=5.0)
                             for factor in ("dynamic", "static")}),
              paper="similar at layer 12", needs=both)
vis_board.add("VIS: both models produce only static and joint units: at most 5% dynamic units", claims.all_of({
    f"{w} {l}": claims.at_most(unit_pct[w, l, "dynamic"], 5.0) for w in vis_datasets
    for l in (encoder_last, decoder_last)}), paper="solely static and joint units", needs=both)
vis_board.add("VIS: ovis gives more joint units than ytvis in the encoder, fewer in the decoder", claims.all_of({
    f"encoder ({encoder_last})": claims.exceeds(unit_pct["ovis", encoder_last, "joint"],
                                                unit_pct["ytvis", encoder_last, "joint"]),
    f"decoder ({decoder_last})": claims.exceeds(unit_pct["ytvis", decoder_last, "joint"],
                                                unit_pct["ovis", decoder_last, "joint"])}),
    paper="OVIS more joint in the encoder, YTVIS more in the decoder", needs=both)
vis_board.add("VIS: deeper in the ovis model, fewer joint and more static units (last decoder vs last encoder layer)",
              claims.all_of({
                  "joint": claims.exceeds(unit_pct["ovis", encoder_last, "joint"], unit_pct["ovis", decoder_last, "joint"]),
                  "static": claims.exceeds(unit_pct["ovis", decoder_last, "static"],
                                           unit_pct["ovis", encoder_last, "static"])}),
              paper="as TAO-VOS: less dynamic and joint, more static deeper", needs=both)
vis_board.show()
