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
# Here every model is trained from scratch on the `kinetics` world (see the worlds chapter of
# the library: the same motion classes as `ssv2`, but with scene and object that correlate with
# the class, informative but not sufficient), then measured on stylized held-out clips of the
# same world, stage by stage, with the estimator of chapter 1.

# %% tags=["parameters"]
profile = "quick"  # smoke | quick | full
seed = 0
device = None  # None: the profile's device
task = "action"  # the action-recognition part of the architecture study
world = "kinetics"
models = ["c2d", "i3d", "x3d", "slowonly", "fastonly", "slowfast", "timesformer", "mvit"]
threshold = 0.5

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display

from stdyn import experiments, plots, profiles, worlds
from stdyn.experiments import claim

if task != "action":
    raise ValueError(f"task {task!r} is not part of this chapter yet; use task='action'")
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

# %%
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
units = study.units(threshold)
plots.unit_grid(units, order=series_order, title=f"Unit-wise encoding (lambda = {threshold})")
plt.show()

# %%
last_units = units[units["stage"] == units.groupby("series")["stage"].transform("max")]
table = last_units.pivot_table(index="series", columns="category", values="percent", sort=False).round(1)
table.join(accuracy.set_index("model")["val_acc"].rename("val acc"), how="left")

# %% [markdown]
# ## Claims
#
# Each claim of the paper's Sec. 4.1.1, tested on this run. Intervals are 95% bootstrap
# intervals over clips; differences between models are paired (same clips, same resamples). A
# claim that one number exceeds another reproduces only when the interval of the difference lies
# above zero. A claim of similarity ("about as many as") also holds, trivially, when neither model
# has any dynamic units: read it together with the unit counts above.

# %%
rows = []
if SINGLE_STREAM:
    margins = {(m, l): study.layerwise(m, world, l).percent("static") - study.layerwise(m, world, l).percent("dynamic")
               for m in SINGLE_STREAM for l in study.measurements[m, world].layers}
    smallest = min(margins, key=lambda k: margins[k].value)
    static_everywhere = sum(v.above() for v in margins.values())
    rows.append(claim(
        "single-stream 3D CNNs (C2D, I3D, X3D) are static-biased at every stage",
        "all stages static > dynamic",
        f"{static_everywhere}/{len(margins)} stages static > dynamic; smallest margin "
        f"{smallest[0]} {smallest[1]}: {margins[smallest]} points",
        static_everywhere == len(margins)))
if {"slowonly", "fastonly"} <= set(models):
    diff = (study.unitwise("fastonly", world, threshold=threshold).percent("dynamic")
            - study.unitwise("slowonly", world, threshold=threshold).percent("dynamic"))
    rows.append(claim("FastOnly encodes more dynamic units than SlowOnly (last stage, unit-wise)",
                      "FastOnly >> SlowOnly", f"difference {diff} points of channels", diff.above()))
if {"slowonly", "slowfast"} <= set(models):
    slow_layers = [l for l in study.measurements["slowfast", world].layers if l.startswith("slow.")]
    only_layers = study.measurements["slowonly", world].layers
    gains = [study.layerwise("slowfast", world, s).percent("dynamic") - study.layerwise("slowonly", world, o).percent("dynamic")
             for s, o in zip(slow_layers[1:], only_layers[1:])]
    rows.append(claim("the fast pathway raises the slow pathway's dynamic units from stage 2 on",
                      "+3.3 points at stage 2", "stages 2-5: " + ", ".join(str(g) for g in gains) + " points",
                      all(g.above() for g in gains)))
if {"fastonly", "slowfast"} <= set(models):
    diff = (study.layerwise("slowfast", world, branch="fast").percent("dynamic")
            - study.layerwise("fastonly", world).percent("dynamic"))
    rows.append(claim("the fast branch extracts more dynamics inside SlowFast than alone (FastOnly), last stage",
                      "SF-Fast > FastOnly", f"difference {diff} points", diff.above()))
if "c2d" in models and {"i3d", "slowonly"} & set(models):
    others = [m for m in ("i3d", "slowonly") if m in models]
    diffs = {m: study.layerwise(m, world).percent("dynamic") - study.layerwise("c2d", world).percent("dynamic")
             for m in others}
    rows.append(claim("3D CNNs such as I3D and SlowOnly have about as many dynamic units as C2D (last stage)",
                      "similar to C2D (within 3 points)", "; ".join(f"{m} - c2d: {d} points" for m, d in diffs.items()),
                      all(abs(d.value) < 3 for d in diffs.values())))
for model in TRANSFORMERS:
    result = study.unitwise(model, world, threshold=threshold)
    static_joint = result.percent("static").value + result.percent("joint").value
    rows.append(claim(f"{model} produces mainly static and joint units (last block)",
                      "mainly static and joint", f"static + joint = {static_joint:.1f}% of channels",
                      static_joint > 50))
claims = experiments.claims_table(rows)
claims
