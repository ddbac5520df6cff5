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
# # Measuring static and dynamic information
#
# > *"How much static and dynamic information is being captured?"*
# > (Kowal et al., Sec. 1)
#
# A video network sees colour, texture and shape in every frame (**static** information) and
# motion and change across frames (**dynamic** information). This chapter shows how stdyn
# measures how much of each a layer encodes, checks the measurement on a network whose answer
# is known by construction, and then measures a model of your choice.
#
# Every number below is computed when the chapter runs. Change the parameters to measure your
# own model and videos, e.g. `python -m stdyn.book 01 -p model r3d_18 -p videos /data/clips`.

# %% tags=["parameters"]
profile = "quick"  # smoke | quick | full
seed = 0
device = "cpu"
model = "r3d_18"  # a stdyn.models name (e.g. "i3d", "r3d_18") or "package.module:factory"
weights = None  # path to a state dict on disk for `model` (None: random initialisation)
layers = None  # list of layer names; None measures the model's declared stages
videos = "samples"  # a folder of video files, "samples" (real footage shipped with a package) or "synthetic"
threshold = 0.5  # unit-wise threshold lambda

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import display

import stdyn
from stdyn import models, plots
from stdyn.core import claims, fidelity
from stdyn.core.pairs import FramePairs
from stdyn.core.planted import PlantedNet, moving_object_clips, recovery

torch.manual_seed(seed)
torch.set_num_threads(max(1, torch.get_num_threads()))
# Styles: world clips (8 frames) per frame size for the gallery and the fidelity figures, and
# many short world clips for the decorrelation table.
SIZES = {
    "smoke": dict(n_planted=64, n_ci=(16, 32, 64), frames=8, size=32, n_own=6, own_frames=8, own_size=32, boot=20,
                  gallery=2, fidelity_clips={16: 12, 32: 8}, n_decorrelation=400, decorrelation_size=32),
    "quick": dict(n_planted=400, n_ci=(25, 50, 100, 200, 400), frames=16, size=32, n_own=32, own_frames=8,
                  own_size=64, boot=200, gallery=3, fidelity_clips={32: 64, 64: 24}, n_decorrelation=4000,
                  decorrelation_size=32),
    "full": dict(n_planted=2000, n_ci=(50, 100, 200, 500, 1000, 2000), frames=16, size=64, n_own=256,
                 own_frames=16, own_size=112, boot=500, gallery=3, fidelity_clips={32: 400, 64: 150},
                 n_decorrelation=8000, decorrelation_size=64),
}[profile]
SIZES

# %% [markdown]
# ## 1. Pairs that share one factor
#
# The method compares a network's response to two versions of the same video that share only
# one factor (paper Sec. 3.1):
#
# - a **static pair** keeps every frame and its style but shuffles the frame order, so the
#   two clips share all single-frame information and none of the temporal order;
# - a **dynamic pair** keeps the frame order but shows the clip in two different *styles*, so
#   the two clips share their motion and little of their colour and texture.
#
# The paper stylises videos with a neural video-stylisation method. stdyn uses four fixed styles
# built from classical image processing (`stdyn.core.stylize`). Each is one transform per clip, applied
# identically to every frame, so motion is untouched:
#
# - **thermal** maps the clip's brightness through a thermal-camera colour map: one pointwise
#   colour map, a recolouring (training's random recolouring does something alike);
# - **comic** (flat colour bands with ink outlines), **pencil** (graphite lines on tinted paper) and
#   **relief** (embossed lines on a tinted plate) redraw the clip's edges and texture, which
#   training never does.
#
# Every style keeps the outlines of the object and the scene. Here are a few clips of the `ssv2`
# world, whose look (colours, textures, clutter, lighting) is drawn at random per clip, clean and
# in each style, at two frame sizes: the quick profile's (32 px) and the full profile's (64 px),
# or 16 and 32 px in a smoke run. Then one pair of each kind.

# %%
sizes = list(SIZES["fidelity_clips"])
gallery = {size: fidelity.world_clips(SIZES["gallery"], size=size, seed=seed)[0] for size in sizes}
for size, shown in gallery.items():
    plots.style_gallery(shown, frames=[0, 7], title=f"World clips in the four styles, {size}x{size} px "
                                                    "(first and last frame)")
    plt.show()

clip = gallery[sizes[-1]][0]
builder = FramePairs()
static_pair = builder.make(clip[None], [0], "static", seed)
dynamic_pair = builder.make(clip[None], [0], "dynamic", seed)
plots.clip_strip(
    [static_pair[0][0], static_pair[1][0], dynamic_pair[0][0], dynamic_pair[1][0]],
    ["static pair: v1", "static pair: v2\n(frames shuffled)", "dynamic pair: v1", "dynamic pair: v2\n(other style)"],
)
plt.show()

# %% [markdown]
# **Does every style keep the object and its motion?** A dynamic pair is only a fair test if both
# of its clips still show the object and how it moves. The worlds know both exactly: the object's
# coverage in every frame and its true optical flow. Two figures, per style, as a share of the
# clean clips' figure:
#
# - **visibility**: how well the object's outline stands out from the scene around it, the
#   probability that a pixel on the object's boundary has a higher local contrast than a pixel of
#   the surrounding scene (0.5: the outline cannot be told from the scene; 1: it always can). It
#   ignores what fills the object, so outlines alone count as fully visible;
# - **flow agreement**: optical flow estimated on the clip (Farneback) against the true flow on
#   the object's moving pixels, as the mean cosine of the angle between the two (1: same
#   direction everywhere; 0: no motion found or unrelated). Clips whose object only fades in or
#   out have no moving pixels and are left out.
#
# The dashed lines are the floors each style must keep (`stdyn.core.fidelity.KEPT`). Fast turns are the
# hardest case for the line styles: the worlds' rotations turn the object by 20-33 degrees a frame
# in clips of 8 frames.

# %%
per_clip = {size: fidelity.clip_fidelity(*fidelity.world_clips(n, size=size, seed=seed + 3))
            for size, n in SIZES["fidelity_clips"].items()}
kept = pd.concat([fidelity.summarise(frame).assign(size=size) for size, frame in per_clip.items()], ignore_index=True)
kept["floor"] = [fidelity.floors(size).get(metric, np.nan) for size, metric in zip(kept["size"], kept["metric"])]
plots.fidelity_grid(kept, title=f"What each style keeps of the clean clips' figures "
                                f"({', '.join(f'{len(f)} clips at {s} px' for s, f in per_clip.items())})")
plt.show()
kept.round(3)

# %% [markdown]
# **Are the styles unrelated?** A style must change static information enough that it no longer
# identifies the clip: what one style makes of a clip should say nothing about what another
# makes of it. Per clip and style we take the mean red, green and blue, and the *fine-detail
# share*, the part of the clip's brightness variance finer than a 5x5 blur (thin lines give a
# large share, soft shading a small one), and correlate them over many clips between every two
# styles (clips of two frames: the statistics are per clip, and more clips make r more precise).
# These four should be near 0. The last column, the *amount* of structure (the mean
# brightness gradient), stays correlated by design: every style keeps the outlines, as the
# paper's neural stylisation keeps a scene's layout, so a busy clip is busy in every style.

# %%
style_statistics = fidelity.style_statistics(fidelity.world_clips(
    SIZES["n_decorrelation"], frames=2, size=SIZES["decorrelation_size"], seed=seed + 4)[0])
correlations = fidelity.correlations(style_statistics)
plots.decorrelation_heatmap(correlations, title=f"Pearson r between two styles over {SIZES['n_decorrelation']} "
                                                f"world clips ({SIZES['decorrelation_size']} px)")
plt.show()
correlations.pivot_table(index=["style_a", "style_b"], columns="statistic", values="r", sort=False).round(3)

# %% [markdown]
# ## 2. The estimator
#
# Each clip is pooled to one vector per layer, $z \in \mathbb{R}^C$ (global average over time and
# space; mean over tokens for transformers). For each factor $F$ the $N_F$ pairs give
# $(z_1^F, z_2^F)$. With $V$ the total variance of all pooled features (summed over channels)
# and $\mu_F$ the mean of both members,
#
# $$S_F = \frac{1}{V}\sum_{c=1}^{C} \frac{1}{N_F}\sum_n \big(z_{1,n}^F(c) - \mu_F(c)\big)\big(z_{2,n}^F(c) - \mu_F(c)\big),$$
#
# and the share of units encoding each factor is a softmax over the static, dynamic and
# "identical" factor (whose score is 1): $N_F = C \cdot \mathrm{softmax}(S_{dyn}, S_{stat}, 1)_F$.
# This normalised form is what the authors' released code computes; the per-channel Pearson
# mean that the paper prints as eq. (1) is available as `method="pearson"`.
#
# The **unit-wise** score divides each channel's covariance by that channel's variance within the
# factor, $s_F(c)$, and a threshold $\lambda$ sorts channels into *dynamic* ($s_{dyn} > \lambda \ge s_{stat}$),
# *static*, *joint* (both above) and *residual* (neither); channels with zero variance are
# reported as *dead*. All statistics stream in float64 and merge across batches and processes.
#
# One consequence of pairing *different* styles is worth knowing when reading the figures: a
# channel that responds only to the style gets a negative dynamic score, near $-1/(S-1) = -1/3$
# with $S = 4$ styles, because the two members of a dynamic pair never share a style, so their
# per-style offsets are anti-correlated. Negative scores mean "carries the other factor", not
# "broken".

# %% [markdown]
# ## 3. Validation: a network whose answer is known
#
# No trained network comes with ground truth about what its channels encode. `PlantedNet` does:
# its readout channels are fixed functions of the clip, built to be static (mean colour),
# dynamic (the object's velocity), joint (the object's mean position, which survives both
# perturbations), residual (a hash of the frame-ordered pixels) or dead. We measure it through
# the same public pipeline a trained model goes through.

# %%
planted = PlantedNet()
planted_clips = moving_object_clips(SIZES["n_planted"], frames=SIZES["frames"], size=SIZES["size"], seed=seed + 2)
planted_result = stdyn.measure(planted, planted_clips, batch_size=64, seed=seed, bootstrap=SIZES["boot"], device=device)
units = planted_result.unitwise("readout", threshold)
channels = units.to_frame().assign(planted=planted.planted)
channels["correct"] = channels["category"] == channels["planted"]
recovered = channels["correct"].mean()
print(f"{recovered:.0%} of the planted channels are recovered in their category")
pd.crosstab(channels["planted"], channels["category"], rownames=["planted"], colnames=["measured"])

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 4))
plots.unit_scatter(channels, threshold, ax=axes[0], title="planted channels: unit scores")
for _, row in channels.iterrows():
    if row["category"] != "dead":
        axes[0].annotate(row["planted"][:3], (row["static"], row["dynamic"]), fontsize=6, alpha=0.6,
                         xytext=(3, 3), textcoords="offset points")
plots.layer_bars(planted_result.to_frame(), ax=axes[1], title="layer-wise (with 95% bootstrap intervals)")
fig.tight_layout()
plt.show()

# %% [markdown]
# **How many clips are enough?** The chapters report bootstrap intervals over videos (a Poisson
# bootstrap, which streams and merges like the statistics themselves). Their width shrinks
# roughly as $1/\sqrt{N}$:

# %%
ci_rows = []
for n in SIZES["n_ci"]:
    result = stdyn.measure(planted, planted_clips[:n], batch_size=64, seed=seed, bootstrap=SIZES["boot"],
                           device=device, progress=False)
    frame = result.to_frame()
    for _, row in frame[frame["factor"] != "identical"].iterrows():
        ci_rows.append({"clips": n, "factor": row["factor"], "fraction": row["fraction"],
                        "interval width": row["fraction_hi"] - row["fraction_lo"]})
ci_frame = pd.DataFrame(ci_rows)
ax = plt.figure(figsize=(5, 3)).gca()
for factor, group in ci_frame.groupby("factor"):
    ax.plot(group["clips"], 100 * group["interval width"], "o-", color=plots.COLORS[factor], label=factor)
ax.set(xscale="log", yscale="log", xlabel="clips measured", ylabel="95% interval width (points)")
ax.legend(frameon=False)
plt.show()
ci_frame.pivot_table(index="clips", columns="factor", values="interval width").round(4)

# %% [markdown]
# ## 4. Measure your own model
#
# The parameters `model`, `weights`, `layers` and `videos` choose what to measure. By default
# this is torchvision's `r3d_18` with random weights (nothing can be downloaded here; pass
# `weights=` a state dict you have) on short clips of real footage. A randomly initialised
# network is an informative baseline in its own right: it shows what the architecture alone,
# before any training, makes its layers respond to.

# %%
from stdyn.data.videos import VideoFolder, list_videos, sample_videos

if videos == "synthetic":
    own_clips = moving_object_clips(SIZES["n_own"], frames=SIZES["own_frames"], size=SIZES["own_size"], seed=seed)
else:
    files = sample_videos() if videos == "samples" else list_videos(videos)
    own_clips = VideoFolder(files, frames=SIZES["own_frames"], size=SIZES["own_size"],
                            clips_per_video=-(-SIZES["n_own"] // len(files)))
own_model = models.create(model, num_classes=400, weights=weights)
display(models.describe(own_model))
own = stdyn.measure(own_model, own_clips, layers, batch_size=4, seed=seed, bootstrap=SIZES["boot"], device=device)
print(f"measured {len(own_clips)} clips of shape {tuple(own_clips[0].shape)}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [1, 1.3]})
plots.layer_bars(own.to_frame(), ax=axes[0], title=f"{model}: layer-wise")
plots.unit_bars(own.units_frame(threshold), ax=axes[1], title=f"{model}: unit-wise (lambda = {threshold})")
fig.tight_layout()
plt.show()
own.to_frame().query("factor != 'identical'").round(3)

# %% [markdown]
# Running this notebook live, explore any measured layer at other thresholds:

# %%
plots.explore(own)

# %% [markdown]
# ## Claims
#
# What this chapter set out to show, checked against this run with `stdyn.core.claims`: each verdict
# comes from a 95% bootstrap interval (over clips; for the interval widths, over the bootstrap's
# own replicates), never from a point value alone.

# %%
board = claims.Board(chapter="01", seeds=1)
board.at_least("the estimator recovers the planted category of at least 95% of channels (% of channels)",
               recovery(planted_result.stats["readout"], planted.planted, threshold), 95.0, paper="(not in the paper)")
for metric, what in (("visibility", "the object visible"), ("flow_cosine", "the object's motion")):
    margins = {f"{size} px": claims.bootstrap(lambda i: fidelity.least_margin(frame.iloc[i], size, [metric]),
                                              len(frame), replicates=SIZES["boot"], seed=seed)
               for size, frame in per_clip.items()}
    board.add(f"every style keeps {what}: its {metric} as a share of the clean clips' reaches its floor at "
              f"{' and '.join(margins)} (smallest margin above the floor over styles, at least 0)",
              claims.all_of({size: claims.at_least(margin, 0.0) for size, margin in margins.items()}),
              paper="(not in the paper)")
board.at_most(f"styles decorrelate colour and fine detail: largest |r| over style pairs of mean red, green, blue "
              f"and fine-detail share ({SIZES['n_decorrelation']} world clips) at most {fidelity.MAX_ABS_R}",
              claims.bootstrap(lambda i: fidelity.max_abs_r(style_statistics, i), SIZES["n_decorrelation"],
                               replicates=SIZES["boot"], seed=seed),
              fidelity.MAX_ABS_R, paper="(not in the paper)")
fewest = stdyn.measure(planted, planted_clips[:SIZES["n_ci"][0]], batch_size=64, seed=seed, bootstrap=SIZES["boot"],
                       device=device, progress=False)
board.exceeds(f"bootstrap intervals narrow as clips grow: the static share's interval (points) is wider at "
              f"{SIZES['n_ci'][0]} clips than at {len(planted_clips)}",
              claims.interval_width(fewest.layerwise("readout").percent("static"), seed=seed),
              claims.interval_width(planted_result.layerwise("readout").percent("static"), seed=seed),
              paper="(not in the paper)")
board.show()
