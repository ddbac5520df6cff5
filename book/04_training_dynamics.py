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
# # Training dynamics: when static and dynamic information is learned
#
# > *"What are characteristics of learning static and dynamic information over the course of
# > training?"* (Kowal et al., Sec. 4.3)
#
# The paper follows I3D (one pathway) and SlowFast (a slow and a fast pathway) through training on
# Kinetics-400, Diving48 and SSv2, measuring the last layer after every epoch (its Fig. 10, top).
# It finds that both factors are largely learned in the first half of training in every case,
# that Kinetics and Diving48 give similar amounts of static and dynamic information while SSv2
# gives more dynamics to both models, and that I3D keeps a balance of the two throughout while
# both of SlowFast's branches quickly converge toward dynamics on SSv2.
#
# We train the same two architectures on the three worlds that stand in for those datasets (see
# the datasets chapter), keep the weights after every epoch (epoch 0 is the initialisation), and
# measure every checkpoint on the same stylized held-out clips with the same bootstrap resamples,
# so that differences between epochs, worlds and branches are paired where they can be. The
# paper trains for tens of epochs; here each model trains for the profile's schedule (six
# epochs at `quick`), so "the first half of training" means the first three epochs.

# %% tags=["parameters"]
profile = "quick"  # smoke | quick | full
seed = 0
device = None  # None: the profile's device
task = "all"  # "action", "vos" (video object segmentation) or "all"
models = ["i3d", "slowfast"]
datasets = ["kinetics", "diving48", "ssv2"]
tolerance = 1.0  # points: a curve has settled once it stays within its final interval widened to +-tolerance
vos_layers = ["fusion2", "fusion5"]  # MATNet's fusion layers followed over training (AVOS part)

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display
from matplotlib.ticker import MaxNLocator

from stdyn import experiments, plots
from stdyn.book.parts import select_parts
from stdyn.core import claims
from stdyn.experiments import fusion, testbed, vos
from stdyn.training import profiles

parts = select_parts(task, ["action", "vos"])
base = profiles.get(profile)
# Every epoch of every model is measured: at `quick` on 150 held-out clips per checkpoint, and on
# the worlds that other chapters train these models on already (diving48 only at `full`), so that
# the book builds in half an hour on a laptop CPU.
P = base.replace(n_measure=150) if base.name == "quick" else base
if base.name == "quick":
    datasets = [world for world in datasets if world != "diving48"]
pd.Series({"clips": f"{P.n_train} train / {P.n_measure} measured per checkpoint, 3x{P.frames}x{P.size}x{P.size}",
           "training": f"{P.epochs} epochs, {P.optimizer}, lr {P.lr} (cosine), batch {P.batch_size}",
           "checkpoints measured": f"epochs 0-{P.epochs} of {len(models) * len(datasets)} models",
           "worlds": ", ".join(datasets),
           "bootstrap replicates": experiments.BOOTSTRAP[P.name], "settling tolerance": f"+-{tolerance} points"},
          name=f"profile {profile}").to_frame()

# %% [markdown]
# ## Training, and measuring every checkpoint


# %% [markdown]
# The testbed checks (chapter 0) come first: where they fail, this chapter's verdicts about
# dynamics read "not tested".

# %%
# part: action
bed = testbed.validate(profile, seed=seed, device=device)
bed.banner()

# %%
# part: action
study = experiments.survey(models, datasets, P, seed=seed, device=device, measure_models=False)
epochs = study.entries[models[0], datasets[0]].epochs
# Every stage after the last epoch; before it, the last stage of each branch (what the curves show).
snapshots = {epoch: experiments.Survey(P.name, study.entries, {
    (model, world): experiments.measure_entry(
        study.entries[model, world], world, P, epoch=epoch, seed=seed,
        layers=None if epoch == epochs[-1] else experiments.last_layers(study.entries[model, world].model))
    for model in models for world in datasets}) for epoch in epochs}
final = snapshots[epochs[-1]]
layers = pd.concat([snapshot.layers().assign(epoch=epoch) for epoch, snapshot in snapshots.items()],
                   ignore_index=True)
last = layers[(layers["stage"] == layers.groupby("series")["stage"].transform("max"))
              & layers["factor"].isin(["dynamic", "static"])]
series_order = list(dict.fromkeys(last["series"]))

# %% [markdown]
# The models' held-out accuracy after each epoch (chance is one over the number of classes).

# %%
# part: action
fig, axes = plt.subplots(1, len(models), figsize=(3.6 * len(models), 2.6), squeeze=False, sharey=True)
for ax, model in zip(axes[0], models):
    for world in datasets:
        metrics = study.entries[model, world].metrics
        ax.plot(metrics["epoch"], 100 * metrics["val_acc"], marker="o", ms=3, label=world)
    ax.set(title=model, xlabel="epoch", ylim=(0, 100))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.spines[["top", "right"]].set_visible(False)
axes[0, 0].set_ylabel("val top-1 (%)")
axes[0, -1].legend(frameon=False, fontsize="small")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Static and dynamic units over training (paper Fig. 10, top)
#
# Layer-wise percent of units encoding the dynamic (blue) and static (red) factor at the last
# stage of I3D and of each SlowFast branch (before fusion), with 95% bootstrap bands over the
# measured clips. A dotted line marks the epoch from which each curve has *settled*: it stays
# within its final value's interval, widened to at least ±`tolerance` points.

# %%
# part: action
settling = experiments.settling_table(last, final, ["series", "world", "factor"], tolerance=tolerance)

plots.epoch_grid(last, row="series", col="world", settled=settling,
                 title="Last-stage encoding over training (dotted: settled)")
plt.show()

# %%
# part: action
settling.pivot_table(index=["series", "factor"], columns="world", values="settled at epoch", aggfunc="first",
                     sort=False)[datasets]

# %% [markdown]
# ## Do the models see a clip's motion through a change of style?
#
# A dynamic pair shows one held-out clip in two styles, and it counts as dynamic information
# only where the model's features carry the clip's motion across the change of style. A quick
# check: each final model's top-1 on the measured clips as they are and in each of the four
# styles. Near chance on stylized clips means that a change of style moves the features as much
# as a change of clip, so the dynamic share stays near its value at initialisation whatever the
# model learned about motion.

# %%
# part: action
style_check = pd.DataFrame({
    f"{model} / {world}": experiments.entry_style_accuracy(study.entries[model, world], world, P)
    for model in models for world in datasets}).T
style_check.assign(chance=[100 / len(study.entries[m, w].classes) for m in models for w in datasets]).round(1)

# %% [markdown]
# ## Every stage at the end of training
#
# Where the curves end, stage by stage: the difference between the dynamic and the static
# percent (positive: dynamic-biased) after the last epoch.

# %%
# part: action
end = layers[(layers["epoch"] == epochs[-1]) & layers["factor"].isin(["dynamic", "static"])]
margin = end.pivot_table(index=["series", "stage"], columns=["world", "factor"], values="percent", sort=False)
(margin.xs("dynamic", axis=1, level="factor") - margin.xs("static", axis=1, level="factor"))[datasets].round(1)

# %% [markdown]
# ## Claims
#
# "Settled" is an equivalence test here: from the middle of training on, every checkpoint's value
# minus the final value (paired: same clips, same resamples) must have its whole 95% interval
# within the stated margin. Averages over training are over epochs 1 to the last, with the
# checkpoints' paired bootstrap replicates, so their intervals are intervals over clips. A model
# whose final clean top-1 on a world is not at least halfway from chance to the better model's
# makes the claims about it "not tested"; so does a failed testbed check for the claims about
# dynamics. Where a claim about dynamics does not reproduce, look first at the style check above:
# models that are near chance on stylized clips cannot show dynamic information through stylized
# pairs, and curves that hardly move settle trivially.

# %%
# part: action
board = claims.Board(chapter="04", seeds=1)
board.gate("dynamics", bed.dynamics_ok, "testbed: " + "; ".join(bed.failures()))
for world in datasets:
    board.competence({f"{m} on {world}": 100 * study.entries[m, world].val_accuracy for m in models},
                     100 / len(study.entries[models[0], world].classes))
everyone = [f"{m} on {w}" for m in models for w in datasets]
half = epochs[-1] / 2
curves = last[["series", "world", "model", "layer", "factor"]].drop_duplicates()
board.add(f"static and dynamic biases settle in the first half of training: from epoch {half:g} on, every "
          "last-stage curve stays within 5 points of its final value",
          claims.all_of({f"{c.series} {c.world} {c.factor}": claims.settled(
              {e: snapshots[e].layerwise(c.model, c.world, c.layer).percent(c.factor) for e in epochs},
              by=half, margin=5.0)
              for c in curves.itertuples()}),
          paper="all within the first half", needs=["dynamics", *everyone])

trained = [e for e in epochs if e > 0]
if "ssv2" in datasets and len(datasets) > 1:
    average = {(c.series, c.world): experiments.mean_estimate(
        [snapshots[e].layerwise(c.model, c.world, c.layer).percent("dynamic") for e in trained])
        for c in curves[curves["factor"] == "dynamic"].itertuples()}
    board.add(f"SSv2 yields more dynamic information than {' and '.join(w for w in datasets if w != 'ssv2')} "
              "over training (last stage, mean over epochs)",
              claims.all_of({f"{s} ssv2 vs {w}": claims.exceeds(average[s, "ssv2"], average[s, w])
                             for s in series_order for w in datasets if w != "ssv2"}),
              paper="SSv2 > Kinetics, Diving48 for I3D and both SlowFast branches", needs=["dynamics", *everyone])
if "slowfast" in models and "ssv2" in datasets:
    board.add("SlowFast's branches converge toward dynamics on SSv2 (last stage, end of training)",
              claims.all_of({b: claims.exceeds(final.layerwise("slowfast", "ssv2", branch=b).percent("dynamic"),
                                               final.layerwise("slowfast", "ssv2", branch=b).percent("static"))
                             for b in ("slow", "fast")}),
              paper="both branches dynamic > static, reached early", needs=["dynamics", "slowfast on ssv2"])
board.show()

# %% [markdown]
# ## Video object segmentation: MATNet over training (paper Fig. 10, bottom)
#
# The paper trains MATNet on DAVIS16 alone and on DAVIS16 with YouTube-VOS, and follows fusion
# layers 2 and 5 over training. With YouTube-VOS, fusion layer 2 learns more dynamics and
# quickly becomes dynamic-biased; fusion layer 5 alternates and ends static-biased.
#
# Here MATNet trains on `davis` and on `davis+ytvos` (the models of chapter 02), and every epoch
# checkpoint (epoch 0: the initial weights) is measured on the held-out `davis` frames of
# chapter 02, with the AVOS testbed of chapter 07 read first.

# %%
# part: vos
avos_bed = fusion.avos_testbed(P, seed=seed, device=device)
avos_bed.banner()

# %%
# part: vos
avos = vos.vos_study(vos.TRAINING_DYNAMICS, P, seed=seed, measure=[], score_worlds=(vos.HELD_OUT,),
                     styled_worlds=(), device=device)
avos_worlds = list(vos.TRAINING_DYNAMICS)
avos_snapshots = vos.checkpoint_measurements(
    {vos.TRAINING_DYNAMICS[w]: avos.entries[w] for w in avos_worlds}, vos_layers, P, seed=seed)
avos_epochs = sorted(avos_snapshots)
avos_final = avos_snapshots[avos_epochs[-1]]
avos_curves = pd.concat([snapshot.layers().assign(epoch=epoch) for epoch, snapshot in avos_snapshots.items()],
                        ignore_index=True)
avos_curves = avos_curves[avos_curves["factor"].isin(["dynamic", "static"])]
avos_settling = experiments.settling_table(avos_curves, avos_final, ["layer", "world", "factor"], tolerance=tolerance)
floor = float(avos.baselines.query("world == @vos.HELD_OUT")["mIoU"].max())
held_out = {w: avos.miou(w, vos.HELD_OUT) for w in avos_worlds}
pd.DataFrame({"held-out davis mIoU (last epoch)": {f"MATNet on {w}": e.value for w, e in held_out.items()},
              "best input-free baseline": floor}).round(3)

# %% [markdown]
# Layer-wise percent of units encoding the dynamic (blue) and static (red) factor at fusion
# layers 2 and 5 after each epoch, with 95% bootstrap bands over the measured clips; dotted lines
# mark where each curve settles, as in the action part above.

# %%
# part: vos
plots.epoch_grid(avos_curves, row="layer", col="world", settled=avos_settling,
                 title="MATNet's fusion layers over training (dotted: settled)")
plt.show()
display(avos_settling.pivot_table(index=["layer", "factor"], columns="world", values="settled at epoch",
                                  aggfunc="first", sort=False)[avos_worlds])

# %% [markdown]
# ### Claims (AVOS)
#
# As for the action models: averages over epochs 1 to the last carry the checkpoints' paired
# replicates, and "settled" is the equivalence test above with a 5-point margin.

# %%
# part: vos
avos_half = avos_epochs[-1] / 2
trained_epochs = [e for e in avos_epochs if e > 0]


def avos_percent(epoch, world, layer, factor):
    return avos_snapshots[epoch].layerwise(*vos.TRAINING_DYNAMICS[world], layer).percent(factor)


everyone = [f"MATNet on {w}" for w in avos_worlds]
avos_board = claims.Board(chapter="04", seeds=1)
avos_board.gate("AVOS testbed", avos_bed.ok, "AVOS testbed: " + "; ".join(avos_bed.failures()))
avos_board.competence({f"MATNet on {w}": e.value for w, e in held_out.items()}, floor,
                      metric="held-out davis mIoU", baseline="the best input-free baseline")
mean_dynamic = {w: experiments.mean_estimate([avos_percent(e, w, "fusion2", "dynamic") for e in trained_epochs])
                for w in avos_worlds}
avos_board.exceeds("AVOS: with ytvos, fusion layer 2 learns more dynamics (layer-wise, mean over epochs)",
                   mean_dynamic["davis+ytvos"], mean_dynamic["davis"], paper="DAVIS+YTB above DAVIS",
                   needs=["AVOS testbed", *everyone])
avos_board.add(f"AVOS: with ytvos, fusion layer 2 converges toward dynamics early: dynamic above static from "
               f"epoch {avos_half:g} on", claims.all_of({
                   f"epoch {e}": claims.exceeds(avos_percent(e, "davis+ytvos", "fusion2", "dynamic"),
                                                avos_percent(e, "davis+ytvos", "fusion2", "static"))
                   for e in avos_epochs if e >= avos_half}),
               paper="quickly dynamic-biased", needs=["AVOS testbed", "MATNet on davis+ytvos"])
avos_board.add("AVOS: fusion layer 5 ends static-biased (last epoch, both training sets)", claims.all_of({
    w: claims.exceeds(avos_percent(avos_epochs[-1], w, "fusion5", "static"),
                      avos_percent(avos_epochs[-1], w, "fusion5", "dynamic")) for w in avos_worlds}),
    paper="static-biased at the end", needs=["AVOS testbed", *everyone])
avos_board.add(f"AVOS: the biases settle in the first half of training: from epoch {avos_half:g} on, every curve "
               "stays within 5 points of its final value", claims.all_of({
                   f"{w} {layer} {factor}": claims.settled({e: avos_percent(e, w, layer, factor) for e in avos_epochs},
                                                           by=avos_half, margin=5.0)
                   for w in avos_worlds for layer in vos_layers for factor in ("dynamic", "static")}),
               paper="settled within the first half", needs=["AVOS testbed", *everyone])
avos_board.show()
