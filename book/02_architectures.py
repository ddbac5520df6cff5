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
# # Architectures: where static and dynamic information lives
#
# > *"How do model architectures affect static and dynamic biases?"* (Kowal et al., Sec. 4.1)
#
# The paper measures eight action-recognition architectures trained on Kinetics-400 and finds
# that every single-stream network is biased toward static information at every stage, that a
# network built for motion (FastOnly) and SlowFast's fast branch carry more dynamic units, and
# that SlowFast's fast-to-slow fusion moves dynamic information into the slow branch.
#
# Here every model is trained from scratch on the `kinetics` world (the same motion classes as
# `ssv2`, but every scene holds a static structure, a bar, a ring, a frame, ..., which is the
# class's own in most clips: informative but not sufficient; see chapter 0), then measured on
# stylized held-out clips of the same world, stage by stage, with the estimator of chapter 1.

# %% tags=["parameters"]
profile = "quick"  # smoke | quick | full
seed = 0
device = None  # None: the profile's device
task = "all"  # "action", "vos" (video object segmentation), "vis" (video instance segmentation) or "all"
world = "kinetics"
models = ["c2d", "i3d", "x3d", "slowonly", "fastonly", "slowfast", "timesformer", "mvit"]
threshold = 0.5

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display

from stdyn import experiments, plots
from stdyn.book.parts import select_parts
from stdyn.core import claims
from stdyn.data import worlds
from stdyn.experiments import fusion, testbed, vis, vos
from stdyn.training import profiles

parts = select_parts(task, ["action", "vos", "vis"])
P = profiles.get(profile)
SINGLE_STREAM = [m for m in ("c2d", "i3d", "x3d") if m in models]
TRANSFORMERS = [m for m in ("timesformer", "mvit") if m in models]
pd.Series({"clips": f"{P.n_train} train / {P.n_measure} measured, 3x{P.frames}x{P.size}x{P.size}",
           "training": f"{P.epochs} epochs, {P.optimizer}, lr {P.lr}, batch {P.batch_size}",
           "per-model settings": "; ".join(f"{m}: {P.train_overrides_for(m)}" for m in models
                                          if P.train_overrides_for(m)) or "none",
           "bootstrap replicates": experiments.BOOTSTRAP[P.name], "world": worlds.describe(world)},
          name=f"profile {profile}").to_frame()

# %% [markdown]
# ## Training
#
# Each model comes from the model cache: trained once per configuration, shared with every
# other chapter that asks for the same one.


# %% [markdown]
# The testbed checks (chapter 0) come first: where they fail, this chapter's verdicts about
# dynamics read "not tested".

# %%
# part: action
bed = testbed.validate(profile, seed=seed, device=device)
bed.banner()

# %%
# part: action
study = experiments.survey(models, [world], P, seed=seed, device=device)
accuracy = study.accuracy()
chance = 1 / len(study.entries[models[0], world].classes)
accuracy.assign(chance=chance).round(3)

# %% [markdown]
# ## Layer-wise analysis (paper Fig. 3, left)
#
# Percent of units encoding the dynamic (blue) and static (red) factor at every stage, with 95%
# bootstrap intervals over the measured clips. SlowFast is measured on each branch *before*
# fusion (`slowfast (slow)`, `slowfast (fast)`); transformers at every block.

# %%
# part: action
layers = study.layers()
series_order = list(dict.fromkeys(layers["series"]))
plots.layer_grid(layers, order=series_order, title=f"Layer-wise encoding, models trained on '{world}'")
plt.show()

# %% [markdown]
# ## Unit-wise analysis (paper Fig. 3, right)
#
# Every channel sorted by its unit scores at threshold $\lambda$ = 0.5 into dynamic, static,
# joint (both) and residual (neither) units.

# %%
# part: action
units = study.units(threshold)
plots.unit_grid(units, order=series_order, title=f"Unit-wise encoding (lambda = {threshold})")
plt.show()

# %%
# part: action
last_units = units[units["stage"] == units.groupby("series")["stage"].transform("max")]
table = last_units.pivot_table(index="series", columns="category", values="percent", sort=False).round(1)
table.join(accuracy.set_index("model")["val_acc"].rename("val acc"), how="left")

# %% [markdown]
# ## Claims
#
# Each claim of the paper's Sec. 4.1.1, tested on this run with `stdyn.core.claims`. Intervals are
# 95% bootstrap intervals over clips; differences between models are paired (same clips, same
# resamples). "Exceeds" reproduces only when the interval of the difference lies above zero, and
# is contradicted when it lies below; "similar" is an equivalence test: the whole interval of the
# difference must lie within the stated margin. A model whose clean top-1 is not at least halfway
# from chance to the best model's makes the claims about it "not tested"; so does a failed
# testbed check for the claims about dynamics.

# %%
# part: action
board = claims.Board(chapter="02", seeds=1)
board.gate("dynamics", bed.dynamics_ok, "testbed: " + "; ".join(bed.failures()))
board.competence(100 * accuracy.set_index("model")["val_acc"], 100 * chance)
last = {m: study.layerwise(m, world).percent("dynamic") for m in models}
units_of = {m: study.unitwise(m, world, threshold=threshold) for m in models}
if SINGLE_STREAM:
    board.add("single-stream 3D CNNs (C2D, I3D, X3D) are static-biased at every stage", claims.all_of({
        f"{m} {l}": claims.exceeds(study.layerwise(m, world, l).percent("static"),
                                   study.layerwise(m, world, l).percent("dynamic"))
        for m in SINGLE_STREAM for l in study.measurements[m, world].layers}),
        paper="static > dynamic at all stages", needs=["dynamics", *SINGLE_STREAM])
if {"slowonly", "fastonly"} <= set(models):
    board.exceeds("FastOnly encodes more dynamic units than SlowOnly (last stage, unit-wise, % of channels)",
                  units_of["fastonly"].percent("dynamic"), units_of["slowonly"].percent("dynamic"),
                  paper="FastOnly >> SlowOnly", needs=["dynamics", "fastonly", "slowonly"])
if {"slowonly", "slowfast"} <= set(models):
    slow_layers = [l for l in study.measurements["slowfast", world].layers if l.startswith("slow.")]
    board.add("the fast pathway raises the slow pathway's dynamic units from stage 2 on (layer-wise)", claims.all_of({
        f"stage {i}": claims.exceeds(study.layerwise("slowfast", world, s).percent("dynamic"),
                                     study.layerwise("slowonly", world, o).percent("dynamic"))
        for i, (s, o) in enumerate(zip(slow_layers, study.measurements["slowonly", world].layers), 1) if i >= 2}),
        paper="+3.3 points at stage 2", needs=["dynamics", "slowfast", "slowonly"])
if {"fastonly", "slowfast"} <= set(models):
    board.exceeds("the fast branch extracts more dynamics inside SlowFast than alone (FastOnly), last stage",
                  study.layerwise("slowfast", world, branch="fast").percent("dynamic"), last["fastonly"],
                  paper="SF-Fast > FastOnly", needs=["dynamics", "slowfast", "fastonly"])
if "c2d" in models and {"i3d", "slowonly"} & set(models):
    others = [m for m in ("i3d", "slowonly") if m in models]
    board.add("3D CNNs such as I3D and SlowOnly have as many dynamic units as C2D, within 3 points (last stage)",
              claims.all_of({f"{m} - c2d": claims.similar(last[m], last["c2d"], margin=3.0) for m in others}),
              paper="similar to C2D", needs=["dynamics", "c2d", *others])
for model in TRANSFORMERS:
    board.at_least(f"{model} produces mainly static and joint units: at least half of its channels (last block)",
                   units_of[model].percent("static") + units_of[model].percent("joint"), 50.0,
                   paper="mainly static and joint", needs=["dynamics", model])
board.show()

# %% [markdown]
# ## Video object segmentation: two-stream models (paper Fig. 4)
#
# The paper measures two-stream AVOS models, which read an RGB frame and its optical flow, on
# stylized DAVIS16: FusionSeg (no cross connections, fusion at stages 2 and 5, trained on
# DAVIS16), MATNet (motion-to-appearance cross connections, gated fusion at every stage and a
# boundary-aware refinement, trained on DAVIS16 and YouTube-VOS) and RTNet (bidirectional cross
# connections, convex-combination gated fusion), plus two MATNet variants: without the
# boundary refinement and its loss (NoBAR), and trained on DAVIS16 alone (NoYTB). It finds the
# fusion layers static-biased, MATNet with the most dynamic units at fusion layer 5, RTNet's
# late fusion layers skewed to joint units, and the two variants keeping MATNet's pattern.
#
# Here each model is trained from scratch on the `davis` world (and `ytvos`), the stand-ins of
# chapter 07, and measured on held-out `davis` frames: static pairs keep the frame and jitter
# the flow, dynamic pairs keep the flow and show the frame in two styles. The appearance and
# motion streams are measured after their cross connections, and every fusion layer after
# fusion. The models come from the model cache, shared with chapters 03-05 and 07.
#
# First the AVOS testbed of chapter 07: do both streams matter, is motion usable where
# appearance fails, and does restyling the frame leave the model working? Where it fails, this
# part reads no verdict.

# %%
# part: vos
avos_bed = fusion.avos_testbed(P, seed=seed, device=device)
avos_bed.banner()

# %%
# part: vos
avos = vos.vos_study(vos.ARCHITECTURES, P, seed=seed, score_worlds=(vos.HELD_OUT,), styled_worlds=(), device=device)
avos_labels = list(vos.ARCHITECTURES)
held_out = {label: avos.miou(label, vos.HELD_OUT) for label in avos_labels}
floor = float(avos.baselines.query("world == @vos.HELD_OUT")["mIoU"].max())
pd.DataFrame({"trained on": {label: world for label, (_, world) in vos.ARCHITECTURES.items()},
              "model": {label: name for label, (name, _) in vos.ARCHITECTURES.items()},
              "held-out davis mIoU": {label: estimate.value for label, estimate in held_out.items()},
              "95% interval": {label: "[{:.3f}, {:.3f}]".format(*estimate.interval()) for label, estimate in held_out.items()},
              "best input-free baseline": floor}).round(3)

# %% [markdown]
# ### Layer-wise (paper Fig. 4, left)
#
# Percent of units encoding the dynamic (blue) and static (red) factor in each stream after its
# cross connections and at each fusion layer, with 95% bootstrap intervals over clips.

# %%
# part: vos
avos_layers = avos.layers()
plots.layer_grid(avos_layers, order=list(dict.fromkeys(avos_layers["series"])), col_wrap=3,
                 title="Layer-wise encoding, two-stream AVOS models on held-out davis")
plt.show()

# %% [markdown]
# ### Unit-wise (paper Fig. 4, right)
#
# Unit categories at every fusion layer (lambda = 0.5), and the counts at fusion layer 5.

# %%
# part: vos
avos_units = avos.units(threshold=threshold)
plots.unit_grid(avos_units, by="model", order=avos_labels, title=f"Units at the fusion layers (lambda = {threshold})")
plt.show()
last_fusion = avos_units[avos_units["layer"] == "fusion5"]
display(last_fusion.pivot_table(index="model", columns="category", values="percent", sort=False)
        .reindex(avos_labels).round(1))

# %% [markdown]
# ### Claims (AVOS)
#
# As above: paired differences over the same held-out clips, 95% bootstrap intervals. A model
# whose held-out `davis` mIoU is not at least halfway from the best input-free baseline to the
# best model's makes the claims about it "not tested"; so does a failed AVOS testbed.

# %%
# part: vos
units_at = {(label, layer): avos.measurements[label].unitwise(layer, threshold)
            for label in avos_labels for layer in avos.measurements[label].layers}
fusion_layers = {label: [s.name for s in avos.entries[label].model.stages if s.kind == "fusion"] for label in avos_labels}
late = ("fusion3", "fusion4", "fusion5")
matnet_like = ["MATNet", "MATNet NoBAR", "MATNet NoYTB"]
others = ["FusionSeg", "RTNet"]
avos_board = claims.Board(chapter="02", seeds=1)
avos_board.gate("AVOS testbed", avos_bed.ok, "AVOS testbed: " + "; ".join(avos_bed.failures()))
avos_board.competence({label: estimate.value for label, estimate in held_out.items()}, floor,
                      metric="held-out davis mIoU", baseline="the best input-free baseline")
avos_board.add("AVOS: the fusion layers are static-biased (fusion 3, 4 and 5, layer-wise)", claims.all_of({
    f"{label} {layer}": claims.exceeds(avos.layer_estimate(label, layer, "static"),
                                       avos.layer_estimate(label, layer, "dynamic"))
    for label in avos_labels for layer in fusion_layers[label] if layer in late}),
    paper="static > dynamic at fusion 3-5", needs=["AVOS testbed", *avos_labels])
avos_board.add("AVOS: MATNet has the most dynamic units at fusion layer 5 (unit-wise, % of channels)", claims.all_of({
    f"MATNet vs {other}": claims.exceeds(units_at["MATNet", "fusion5"].percent("dynamic"),
                                         units_at[other, "fusion5"].percent("dynamic")) for other in others}),
    paper="MATNet > FusionSeg, RTNet", needs=["AVOS testbed", "MATNet", *others])
avos_board.add("AVOS: RTNet's late fusion layers skew to joint units (more than MATNet's, fusion 4 and 5)",
               claims.all_of({layer: claims.exceeds(units_at["RTNet", layer].percent("joint"),
                                                    units_at["MATNet", layer].percent("joint"))
                              for layer in ("fusion4", "fusion5")}),
               paper="RTNet skewed toward joint units", needs=["AVOS testbed", "RTNet", "MATNet"])
avos_board.add("AVOS: NoBAR and NoYTB keep MATNet's pattern: more dynamic units at fusion 5 than FusionSeg and RTNet",
               claims.all_of({f"{variant} vs {other}": claims.exceeds(units_at[variant, "fusion5"].percent("dynamic"),
                                                                       units_at[other, "fusion5"].percent("dynamic"))
                              for variant in ("MATNet NoBAR", "MATNet NoYTB") for other in others}),
               paper="consistent with MATNet", needs=["AVOS testbed", *matnet_like, *others])
avos_board.show()

# %% [markdown]
# ## Video instance segmentation: VisTR (paper Fig. 5)
#
# The paper measures VisTR, a CNN backbone followed by a transformer encoder-decoder over the
# tokens of all frames, whose instance-sequence queries each predict one instance's class and
# its mask in every frame, with a ResNet-50 and a ResNet-101 backbone, on stylized DAVIS16. It
# finds every encoder and decoder layer static-biased, the bias growing with depth, units that
# are only static or joint, and more static units with the deeper backbone.
#
# Here a VisTR-like model (`stdyn.models.vis`: the same backbone widths, about twice the blocks
# in the deep one; the transformer layers per profile) trains from scratch on the `ytvis`
# world: a few instances of four shape classes, each with its own motion and look, and little
# occlusion; training matches queries to instances with the Hungarian algorithm. It is scored
# by video mask AP on held-out `ytvis` clips (the YouTube-VIS protocol) against the best
# constant tracks, and measured, as in the paper, on stylized held-out `davis` clips with the
# frame pairs of action recognition: shuffled frames (static) and one clip in two styles
# (dynamic), at every encoder and decoder layer, pooled over tokens.
#
# First the VIS testbed: does each model clearly beat the constant tracks, and does it keep most
# of its AP when the clips are restyled? Where it fails, this part reads no verdict.

# %%
# part: vis
vis_models = vis.vis_study(vis.BACKBONES, P, seed=seed, device=device)
vis_bed = vis.vis_testbed(vis_models)
display(vis_bed.banner(), vis_bed.styled_checks())
vis_models.ap_table().round(3)

# %% [markdown]
# ### Layer-wise and unit-wise (paper Fig. 5)
#
# Percent of units encoding each factor at every encoder layer, then every decoder layer (95%
# bootstrap intervals over clips), and the unit categories at lambda = 0.5.

# %%
# part: vis
vis_labels = list(vis.BACKBONES)
vis_layers = vis_models.layers()
plots.layer_grid(vis_layers, order=vis_labels, title="Layer-wise encoding, VisTR-like models on stylized davis")
plt.show()
vis_units = vis_models.units(threshold)
plots.unit_grid(vis_units, order=vis_labels, title=f"Unit-wise encoding (lambda = {threshold})")
plt.show()
vis_units.pivot_table(index=["model", "layer"], columns="category", values="percent", sort=False).round(1)

# %% [markdown]
# ### Claims (VIS)
#
# As above: paired differences over the same measured clips, 95% bootstrap intervals. The static
# bias of a layer is its static minus its dynamic percent. A model whose mask AP is not at least
# halfway from the constant tracks' to the best model's makes the claims about it "not tested";
# so does a failed VIS testbed.

# %%
# part: vis
shallow, deep = vis_labels
vis_layer_names = {label: vis_models.stage_names(label) for label in vis_labels}
vis_board = claims.Board(chapter="02", seeds=1)
vis_board.gate("VIS testbed", vis_bed.ok, "VIS testbed: " + "; ".join(vis_bed.failures()))
vis_board.competence({label: vis_models.ap(label).value for label in vis_labels}, vis_models.baseline(vis.TRAIN_WORLD),
                     metric="mask AP", baseline="the best constant tracks")
vis_board.add("VIS: every encoder and decoder layer is static-biased (layer-wise)", claims.all_of({
    f"{label} {layer}": claims.exceeds(vis_models.layer_estimate(label, layer, "static"),
                                       vis_models.layer_estimate(label, layer, "dynamic"))
    for label in vis_labels for layer in vis_layer_names[label]}),
    paper="static > dynamic at every layer", needs=["VIS testbed", *vis_labels])
vis_board.add("VIS: the static bias grows from the first to the last layer (static minus dynamic, points)",
              claims.all_of({label: claims.exceeds(vis_models.static_bias(label, vis_layer_names[label][-1]),
                                                   vis_models.static_bias(label, vis_layer_names[label][0]))
                             for label in vis_labels}),
              paper="bias increases with depth", needs=["VIS testbed", *vis_labels])
vis_board.add("VIS: units are only static and joint: at most 5% dynamic units at every layer", claims.all_of({
    f"{label} {layer}": claims.at_most(vis_models.unit_estimate(label, layer, "dynamic", threshold), 5.0)
    for label in vis_labels for layer in vis_layer_names[label]}),
    paper="only static and joint units", needs=["VIS testbed", *vis_labels])
vis_static_units = {label: sum((vis_models.unit_estimate(label, layer, "static", threshold)
                                for layer in vis_layer_names[label][1:]),
                               vis_models.unit_estimate(label, vis_layer_names[label][0], "static", threshold))
                    for label in vis_labels}
vis_board.exceeds("VIS: the deeper backbone (R101) has more static units than R50 (percent summed over all layers)",
                  vis_static_units[deep], vis_static_units[shallow],
                  paper="R101 > R50", needs=["VIS testbed", *vis_labels])
vis_board.show()
