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
# # Fusion and cross connections: what two-stream segmentation models learn from motion
#
# > *"We hypothesize that the reason behind AVOS models being static biased stems from the
# > sub-optimal application of bidirectional cross connections."* (Kowal et al., Sec. 5.3)
#
# Two-stream video object segmentation (AVOS) models see an RGB frame and the optical flow that
# leaves it, and must find the object that moves on its own. They differ in how the streams
# talk to each other before they are fused (*cross connections*: motion-to-appearance only, U,
# as in MATNet; or both ways, B, as in RTNet) and in how they are fused (*gated*, G, MATNet's
# eqs. 6 and 8: channel and spatial attention over the concatenated streams; or
# *convex-combination gated*, CCG, RTNet's eqs. 5 and 7: weights that share one budget between
# the streams). The paper (Fig. 15) measures the four combinations on MoCA, where animals hide
# by their texture and only their motion gives them away, and reports (mIoU with flip
# test-time augmentation) FusionSeg 42.3, RTNet (B+CCG) 60.7, MATNet (U+G) 67.3 and its own
# B+G 70.6. Its claims: gated fusion beats convex-combination gated fusion with either cross
# connection; CCG lowers the ratio of joint to dynamic units; bidirectional cross connections
# cost a little dynamic bias in the late fusion layers.
#
# Here the same study runs on the synthetic AVOS worlds (`stdyn.data.worlds.vos`): the models
# train on `davis` + `ytvos`, are measured on held-out `davis` and scored on held-out `davis`
# and on `moca`, whose objects carry their scene's texture. The four combinations share
# everything but the cross connection and the fusion, and none has MATNet's boundary
# refinement, so that the comparison isolates the two choices.

# %% tags=["parameters"]
profile = "quick"  # smoke | quick | full
seed = 0
device = None  # None: the profile's device
task = "vos"
threshold = 0.5  # the unit-wise metric's lambda (eq. 3)
flip = True  # claims on MoCA compare mIoU with flip test-time augmentation, as the paper reports
late_layers = ["fusion4", "fusion5"]  # where bidirectional connections are said to cost dynamics

# %%
import matplotlib.pyplot as plt
import pandas as pd

from stdyn import experiments, plots
from stdyn.core import claims
from stdyn.experiments import fusion
from stdyn.training import profiles

if task != "vos":
    raise ValueError(f"the fusion study is a video object segmentation study; use task='vos', not {task!r}")
P = profiles.get(profile)
SEEDS = list(range(seed, seed + P.seeds))
pd.Series({"trained on": f"{fusion.TRAIN_WORLD}: {P.vos.n_train} clips each",
           "measured on": f"held-out {fusion.HELD_OUT}: {P.vos.n_measure} clips, one frame each",
           "scored on": f"held-out {fusion.HELD_OUT} and {fusion.CAMOUFLAGE}: {P.vos.n_measure} clips each, every frame",
           "frames": f"{P.vos.size}x{P.vos.size}", "width": P.vos.width,
           "training": f"{P.vos.epochs} epochs of SGD, lr {P.vos.lr:g}, poly schedule, batch {P.vos.batch_size}",
           "seeds": len(SEEDS)}, name=f"profile {profile}").to_frame()

# %% [markdown]
# ## Training, measuring and scoring
#
# Every model trains on frames of the `davis` and `ytvos` clips (each with its flow image), as
# drawn by the worlds (which randomise every clip's look); the profile's segmentation scale sets
# whether training recolours frames again (`P.vos.appearance`). Then each study model is measured on
# held-out `davis` (static pairs: the same frame with jittered flow; dynamic pairs: the same
# flow under two styles of the frame) and every model is scored on every frame of the held-out
# clips, with and without flip.

# %%
studies = [fusion.fusion_study(P, seed=s, device=device) for s in SEEDS]
study = studies[0]
LABELS = study.labels

# %% [markdown]
# ## The testbed for this task
#
# The study means something only if the instrument works here. Both streams must matter (the
# two-stream network clearly beats itself on one stream), motion must be usable where
# appearance fails (on `moca` the U+G model is well above the appearance-only one), and
# restyling the RGB frame must leave most of the two-stream model's mIoU (the dynamic pairs
# restyle it). The AVOS parts of chapters 02-05 read the same checks. Where a check fails this
# chapter reads no verdict.

# %%
bed = fusion.testbed(study)
bed.banner()

# %%
bed.styled_checks()

# %%
scores = pd.concat([s.miou_table() for s in studies]).groupby(["model", "world"], sort=False).mean()
scores.unstack("world").round(3)

# %% [markdown]
# The input-free baselines the models must beat: the best constant mask and the centre prior
# (the training masks' frequency map, thresholded), fitted on the training masks.

# %%
study.baselines.pivot(index="baseline", columns="world", values="mIoU").round(3)

# %% [markdown]
# What the models see and predict on `moca`: the frame, its flow image, the true mask and each
# model's foreground probability.

# %%
fig = plots.segmentation_strip(**study.examples(fusion.CAMOUFLAGE, labels=[*LABELS, *fusion.SINGLE_STREAM]))
plt.show()

# %% [markdown]
# ## Static, dynamic and joint units at the fusion layers (paper Fig. 15, top)
#
# Unit-wise categories (eq. 3, lambda = 0.5) at every fusion layer of each model, measured on
# held-out `davis`.

# %%
units = study.units()
fig = plots.unit_grid(units, by="model", order=LABELS, title="units at each fusion layer")
plt.show()

# %%
last = {label: f"fusion{max(s.number for s in study.entries[label].model.stages if s.kind == 'fusion')}"
        for label in LABELS}


def over_seeds(statistic):
    """One estimate per model: ``statistic(study, label)`` combined over the seeds."""
    return {label: claims.combine_seeds([statistic(s, label) for s in studies]) for label in LABELS}


dynamic = over_seeds(lambda s, label: s.unit_estimate(label, last[label], "dynamic", threshold))
joint = over_seeds(lambda s, label: s.unit_estimate(label, last[label], "joint", threshold))
ratio = over_seeds(lambda s, label: s.joint_to_dynamic(label, last[label], threshold))
pd.DataFrame({"last fusion layer": last, "dynamic units (%)": {k: str(v) for k, v in dynamic.items()},
              "joint units (%)": {k: str(v) for k, v in joint.items()},
              "joint / dynamic": {k: str(v) for k, v in ratio.items()}})

# %% [markdown]
# ## Scores on `moca` (paper Fig. 15, bottom)
#
# mIoU (the mean over clips of each clip's mean IoU against the exact masks, with its 95%
# bootstrap interval over clips) and the success rates at IoU 0.5 to 0.9, without and with
# flip. The second table scores boxes as MoCA does (threshold, invert when most of the border
# is foreground, box of the largest component, box IoU against the true box).

# %%
table = study.scores_table(fusion.CAMOUFLAGE)
table.set_index(["model", "flip"]).round(3)

# %%
boxes = study.scores_table(fusion.CAMOUFLAGE, column="box_iou")
boxes.set_index(["model", "flip"]).round(3)

# %%
plots.score_bars(table, order=[*LABELS, *fusion.SINGLE_STREAM], title="mIoU on moca")
plt.show()

# %% [markdown]
# ## Claims
#
# Each claim of the paper's Sec. 5.3, tested on this run with `stdyn.core.claims`. mIoU
# differences are paired over the same clips; unit counts carry their bootstrap intervals over
# the measured clips. Every claim needs the testbed, and each model must be competent: its
# held-out `davis` mIoU at least halfway from the best input-free baseline to the best model.

# %%
board = claims.Board("07", seeds=len(SEEDS))
board.gate("testbed", bed.ok, "testbed failed: " + "; ".join(bed.failures()))
floor = float(study.baselines.query("world == @fusion.HELD_OUT")["mIoU"].max())
held_out = over_seeds(lambda s, label: s.miou(label, fusion.HELD_OUT))
board.competence({label: held_out[label].value for label in LABELS}, floor,
                 metric="held-out davis mIoU", baseline="the best input-free baseline")
moca = over_seeds(lambda s, label: s.miou(label, fusion.CAMOUFLAGE, flip=flip))
late = {label: claims.combine_seeds([experiments.mean_estimate([s.unit_estimate(label, layer, "dynamic", threshold)
                                                               for layer in late_layers]) for s in studies])
        for label in fusion.COMBINATIONS}
board.exceeds("B+G beats B+CCG on moca (mIoU)", moca["B+G"], moca["B+CCG"], paper="70.6 vs 60.7",
              needs=["testbed", "B+G", "B+CCG"])
board.exceeds("U+G beats U+CCG on moca (mIoU)", moca["U+G"], moca["U+CCG"], paper="67.3 (MATNet) vs MATNet*",
              needs=["testbed", "U+G", "U+CCG"])
for label in ("U+G", "U+CCG"):
    board.gate(f"{label} has dynamic units", dynamic[label].value > 0,
               f"{label} has no dynamic units at {last[label]}, so its joint/dynamic ratio is undefined")
board.exceeds("CCG lowers the ratio of joint to dynamic units (U, last fusion layer)", ratio["U+G"], ratio["U+CCG"],
              paper="47.5 vs 25.3 (joint/dynamic, %)",
              needs=["testbed", "U+G", "U+CCG", "U+G has dynamic units", "U+CCG has dynamic units"])
board.exceeds(f"bidirectional connections cost dynamic units in the late fusion layers ({', '.join(late_layers)})",
              late["U+G"], late["B+G"], paper="G+U above G+B at fusion 4 and 5", needs=["testbed", "U+G", "B+G"])
board.show()
