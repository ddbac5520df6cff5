"""The fusion and cross-connection study (paper Sec. 5.3, Fig. 15) and the AVOS testbed checks.

>>> study = fusion_study("quick")
>>> study.scores_table("moca")        # Fig. 15 bottom: mIoU and success rates, with and without flip
>>> study.units()                     # Fig. 15 top: unit-wise categories at every fusion layer
>>> testbed(study).banner()           # do both streams matter? is motion usable? does RGB restyling hurt?
>>> avos_testbed("quick").banner()    # the same checks on the reference model alone (chapters 02-05)

Two-stream models train on ``davis+ytvos`` (frames of clips, SGD with the poly schedule), are
measured on held-out ``davis`` (restyled frames vs jittered flow, :class:`~stdyn.core.pairs.TwoStreamPairs`)
and scored on held-out ``davis`` and on ``moca``. The four combinations of cross connection (U:
motion-to-appearance, B: bidirectional) and fusion (G: gated, CCG: convex-combination gated)
share everything else, none with MATNet's boundary refinement, so that the comparison isolates
them; FusionSeg (no cross connections, concatenation at stages 2 and 5) is the static-biased
reference, and the same network on one stream only gives the single-stream baselines.
"""
from __future__ import annotations

from collections.abc import Mapping

from stdyn.experiments.testbed import Check, Testbed, at_least, checks_frame
from stdyn.experiments.vos import ARCHITECTURES, CAMOUFLAGE, HELD_OUT, TRAIN_WORLD, VosStudy, vos_study
from stdyn.training import profiles

COMBINATIONS: dict[str, str] = {"U+G": "matnet_nobar", "U+CCG": "matnet_star", "B+G": "rtnet_star", "B+CCG": "rtnet"}
STUDY_MODELS: dict[str, str] = {"FusionSeg": "fusionseg", **COMBINATIONS}
SINGLE_STREAM: dict[str, str] = {"appearance only": "appearance_only", "motion only": "motion_only"}

# The AVOS testbed (the AVOS parts of chapters 02-05 and 07 read no verdict when one fails).
BOTH_STREAMS_MARGIN = 0.05  # the two-stream model's held-out mIoU above each single stream's
MOTION_MARGIN = 0.15  # on moca, the reference model's mIoU above appearance only
MIN_RGB_RETENTION = 0.6  # mean mIoU over the RGB styles, as a share of clean mIoU
REFERENCE = "U+G"  # the two-stream model whose single-stream versions are the baselines


def testbed(study: VosStudy) -> Testbed:
    """The AVOS testbed checks on a study holding the reference model (:data:`REFERENCE`) and the
    single streams: both streams matter on held-out davis; motion is usable where appearance fails
    (moca); the two-stream model keeps most of its mIoU with its RGB restyled; it beats the
    input-free baselines."""
    reference = study.miou(REFERENCE, HELD_OUT)
    checks = []
    for name in SINGLE_STREAM:
        single = study.miou(name, HELD_OUT)
        checks.append(Check("both streams matter", f"{REFERENCE} vs {name}, held-out {HELD_OUT}",
                            f">= {BOTH_STREAMS_MARGIN:.2f} mIoU above",
                            f"{reference.value:.3f} vs {single.value:.3f}",
                            at_least(reference.value - single.value, BOTH_STREAMS_MARGIN)))
    # The reference model, not the study's best: every chapter can then read the same check from
    # three models, and it is the stricter of the two.
    moca, appearance = study.miou(REFERENCE, CAMOUFLAGE), study.miou("appearance only", CAMOUFLAGE)
    checks.append(Check("motion where appearance fails", f"{REFERENCE} vs appearance only, {CAMOUFLAGE}",
                        f">= {MOTION_MARGIN:.2f} mIoU above", f"{moca.value:.3f} vs {appearance.value:.3f}",
                        at_least(moca.value - appearance.value, MOTION_MARGIN)))
    kept = study.retention(REFERENCE)
    checks.append(Check("style retention", f"{REFERENCE}, RGB restyled, held-out {HELD_OUT}",
                        f">= {MIN_RGB_RETENTION:.2f} of clean",
                        f"{kept['retention']:.2f} ({kept.drop(['clean', 'retention']).mean():.3f} / {kept['clean']:.3f})",
                        at_least(kept["retention"], MIN_RGB_RETENTION)))
    floor = float(study.baselines.query("world == @HELD_OUT")["mIoU"].max())
    checks.append(Check("above input-free baselines", f"{REFERENCE}, held-out {HELD_OUT}",
                        f">= best baseline + {BOTH_STREAMS_MARGIN:.2f}", f"{reference.value:.3f} vs {floor:.3f}",
                        at_least(reference.value - floor, BOTH_STREAMS_MARGIN)))
    models = study.miou_table()
    models = models[models["world"].isin([HELD_OUT, CAMOUFLAGE])].dropna(axis=1, how="all").reset_index(drop=True)
    return Testbed(checks_frame(checks), models)


def testbed_study(profile: str | profiles.Profile = "quick", *, seed: int = 0, device: str | None = None,
                  progress: bool = True) -> VosStudy:
    """The models the AVOS testbed reads: the reference two-stream model and its single streams,
    plus the architectures the segmentation chapters measure (:data:`~stdyn.experiments.vos.ARCHITECTURES`),
    whose clean, restyled and ``moca`` mIoU the testbed reports beside the checks."""
    models = {REFERENCE: (COMBINATIONS[REFERENCE], TRAIN_WORLD),
              **{label: (name, TRAIN_WORLD) for label, name in SINGLE_STREAM.items()}, **ARCHITECTURES}
    return vos_study(models, profile, seed=seed, measure=[], flips=(False,), device=device, progress=progress)


def avos_testbed(profile: str | profiles.Profile = "quick", *, seed: int = 0, device: str | None = None,
                 progress: bool = True) -> Testbed:
    """:func:`testbed` of :func:`testbed_study`: what chapter 00 checks and the AVOS parts of
    chapters 02-05 read first."""
    return testbed(testbed_study(profile, seed=seed, device=device, progress=progress))


def fusion_study(profile: str | profiles.Profile = "quick", *, seed: int = 0, models: Mapping[str, str] | None = None,
                 device: str | None = None, progress: bool = True) -> VosStudy:
    """Train (or load) the study's models and the single-stream baselines on ``davis+ytvos``,
    measure the study's models on held-out ``davis`` and score every model on ``davis`` and
    ``moca`` (with and without flip; ``davis`` also with its RGB restyled)."""
    study = dict(models or STUDY_MODELS)
    labels = {**study, **SINGLE_STREAM}
    return vos_study({label: (name, TRAIN_WORLD) for label, name in labels.items()}, profile, seed=seed,
                     measure=list(study), device=device, progress=progress)
