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
# # The testbed, validated before any claim
#
# Every later chapter trains small models on synthetic worlds and reads the paper's claims off
# them. That is only worth doing if the worlds and the trained models behave, in the respects the
# method rests on, as the paper's datasets and models do:
#
# - **A dynamic pair is one clip in two styles.** A model must recognise a clip across a change of
#   style, or its dynamic pairs never agree and every model shows no dynamic units, whatever it
#   learned about motion. The paper's models saw natural video, which shows every motion in
#   countless appearances; ours see worlds whose every clip draws its look from a broad random
#   distribution, and train with random recolouring, lighting and grain on top.
# - **Temporal models learn motion**: they reach a high top-1 on `ssv2` and have dynamic units at
#   their last stage; a model that sees no frame order (C2D) cannot tell the two directions of a
#   motion apart and stays at about half.
# - **Single frames reveal the class where the real dataset's do, and only there**: a classifier
#   of one frame reads `kinetics`'s class from its scene layout, also once the frame is restyled,
#   and learns next to nothing from a frame of `ssv2`.
# - **Video object segmentation** has its own testbed (the last section): a two-stream model must
#   use both its streams, motion must be usable where appearance fails, and restyling the frame
#   must leave the model working.
#
# The checks below are computed on this run. If they fail, the chapters after it still run, but
# say so at the top and read no verdict about dynamics from their numbers.

# %% tags=["parameters"]
profile = "quick"  # smoke | quick | full
seed = 0
device = None  # None: the profile's device
world = "ssv2"
models = ["slowonly", "slowfast", "i3d"]  # temporal models whose style retention and dynamics are checked
orderless = "c2d"  # a model without frame order, which must not solve `world`

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from IPython.display import display

from stdyn import plots
from stdyn.core import stylize
from stdyn.data import worlds
from stdyn.experiments import fusion, testbed
from stdyn.training import profiles, zoo

P = profiles.get(profile)
pd.Series({"clips": f"{P.n_train} train / {P.n_measure} measured, 3x{P.frames}x{P.size}x{P.size}",
           "training": f"{P.epochs} epochs, {P.optimizer}, lr {P.lr}, batch {P.batch_size}, "
                       f"appearance randomisation on {P.appearance:.0%} of clips",
           "styles": ", ".join(stylize.STYLES)}, name=f"profile {profile}").to_frame()

# %% [markdown]
# ## What the worlds look like
#
# Held-out clips of `ssv2` and `kinetics`, labelled with their class (and, for `kinetics`, the
# layout of their scene). Hue,
# saturation and brightness of object and scene, either luminance polarity, textures, clutter,
# lighting, contrast, blur and noise are drawn at random for every clip and say nothing about the
# class. `kinetics` adds a static structure to each scene (a bar, a pole, a diagonal, a frame, a
# ring, corner blocks or a cross), the class's own in most clips: a cue that survives any
# recolouring or style.

# %%
for name in ("ssv2", "kinetics"):
    held_out = zoo.datasets(name, P, progress=False)[1]
    shown = range(6)
    labels = [held_out.classes[held_out.labels[i]] + (f"\n({held_out.meta['layout'][i]})" if name == "kinetics" else "")
              for i in shown]
    plots.clip_strip([held_out[i][0] for i in shown], labels, title=name)
    plt.show()

# %% [markdown]
# ## The checks

# %%
bed = testbed.validate(P, models=models, orderless=orderless, world=world, seed=seed, device=device)
display(bed.banner())
bed.styled_checks()

# %% [markdown]
# ## Top-1 on clean and stylized clips
#
# Each model's held-out top-1 on `ssv2` as it is and in each measurement style. The gap between
# the first bar and the others is what a dynamic pair asks a model to bridge.

# %%
figures = bed.models.drop_duplicates("model")
long = figures.melt(id_vars="model", value_vars=["clean", *stylize.STYLES], var_name="view", value_name="top-1")
axis = sns.barplot(long, x="model", y="top-1", hue="view", palette="viridis")
axis.axhline(1 / len(worlds.spec(world).classes), color="grey", linestyle=":", label="chance")
axis.set(ylim=(0, 1), title=f"Held-out top-1 on {world}, clean and per style")
axis.legend(loc="upper left", bbox_to_anchor=(1, 1))
plt.show()
bed.models.round(3)

# %% [markdown]
# ## Video object segmentation
#
# The segmentation parts of chapters 02-05 and chapter 07 measure two-stream models, which read a
# frame and its optical flow. Their dynamic pairs restyle the frame and keep the flow; their
# static pairs keep the frame and jitter the flow. That measures something only if both streams
# carry information the model uses. The checks, on MATNet without its boundary refinement
# (U+G: motion-to-appearance connections, gated fusion) trained on `davis+ytvos`, and on the same
# network with one stream only:
#
# - **both streams matter**: on held-out `davis`, the two-stream model is at least 0.05 mIoU above
#   each single-stream one;
# - **motion where appearance fails**: on `moca`, whose objects carry their scene's texture, it
#   is at least 0.15 mIoU above the appearance-only model;
# - **style retention**: with its frame restyled it keeps at least 0.6 of its clean mIoU;
# - and it is clearly above the input-free baselines (the best constant mask, the centre prior).

# %%
avos_bed = fusion.avos_testbed(P, seed=seed, device=device)
display(avos_bed.banner())
avos_bed.styled_checks()

# %% [markdown]
# Every two-stream model the segmentation chapters measure (chapter 02's architectures, trained
# here and shared through the model cache) with its held-out `davis` and `moca` mIoU, and on
# `davis` its mIoU with the frame restyled (on the measured frame of each clip) and its share of
# the clean mIoU on the same frames: a dynamic pair asks each of them to see through a change of
# style.

# %%
values = [c for c in ("mIoU", "mIoU, RGB restyled", "retention") if c in avos_bed.models]
avos_bed.models.pivot_table(index="model", columns="world", values=values, sort=False).dropna(
    axis=1, how="all").round(3)
