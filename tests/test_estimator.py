"""The estimator against a naive two-pass NumPy implementation of DESIGN.md's formulas."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from stdyn.core.estimator import PairStats, layerwise, unitwise


def naive(pairs: dict, threshold: float = 0.5) -> dict:
    """Two-pass reference: every formula written out directly."""
    everything = np.concatenate([z for f in ("static", "dynamic") for z in pairs[f]])
    m = everything.mean(0)
    total_variance = ((everything - m) ** 2).mean(0).sum()
    layer, unit = {}, {}
    for factor in ("static", "dynamic"):
        z1, z2 = pairs[factor]
        mu = (z1.mean(0) + z2.mean(0)) / 2
        cross = ((z1 - mu) * (z2 - mu)).mean(0)
        layer[factor] = cross.sum() / total_variance
        unit[factor] = cross / np.concatenate([z1, z2]).var(0)
    logits = np.array([layer["dynamic"], layer["static"], 1.0])
    fractions = np.exp(logits) / np.exp(logits).sum()
    return {"scores": layer, "fractions": fractions, "unit": unit}


def random_pairs(rng: np.random.Generator, n_static: int = 57, n_dynamic: int = 43, channels: int = 12,
                 offset: float = 0.0, scale: float = 1.0) -> dict:
    pairs = {}
    for factor, n in (("static", n_static), ("dynamic", n_dynamic)):
        shared = rng.normal(size=(n, channels))
        mix = rng.uniform(0, 1, size=channels)
        z1 = offset + scale * (shared + mix * rng.normal(size=(n, channels)) + rng.normal(size=channels))
        z2 = offset + scale * (shared + (1 - mix) * rng.normal(size=(n, channels)))
        pairs[factor] = (z1, z2)
    return pairs


def test_layerwise_and_unitwise_match_naive_reference():
    rng = np.random.default_rng(0)
    for _ in range(5):
        pairs = random_pairs(rng)
        ref = naive(pairs)
        lw = layerwise(pairs)
        uw = unitwise(pairs)
        for factor in ("static", "dynamic"):
            assert lw.scores[factor] == pytest.approx(ref["scores"][factor], abs=1e-10)
            np.testing.assert_allclose(uw.scores[factor], ref["unit"][factor], atol=1e-10, rtol=0)
        np.testing.assert_allclose(
            [lw.fractions[f] for f in ("dynamic", "static", "identical")], ref["fractions"], atol=1e-10
        )
        assert lw.scores["identical"] == 1.0
        assert sum(lw.fractions.values()) == pytest.approx(1.0, abs=1e-12)
        assert sum(lw.units.values()) == 12
        assert lw.units["dynamic"] == int(np.floor(ref["fractions"][0] * 12))


def test_pearson_method_is_the_per_channel_correlation_mean():
    rng = np.random.default_rng(1)
    pairs = random_pairs(rng)
    result = layerwise(pairs, method="pearson")
    for factor in ("static", "dynamic"):
        z1, z2 = pairs[factor]
        expected = np.mean([np.corrcoef(z1[:, c], z2[:, c])[0, 1] for c in range(z1.shape[1])])
        assert result.scores[factor] == pytest.approx(expected, abs=1e-10)
    assert result.method == "pearson"
    with pytest.raises(ValueError, match="unknown method"):
        layerwise(pairs, method="spearman")


def test_categories_follow_the_threshold_rule():
    rng = np.random.default_rng(2)
    pairs = random_pairs(rng, channels=40)
    uw = unitwise(pairs, threshold=0.4)
    s, d = uw.scores["static"], uw.scores["dynamic"]
    expected = np.where(
        (d > 0.4) & (s > 0.4), "joint",
        np.where(d > 0.4, "dynamic", np.where(s > 0.4, "static", "residual")),
    )
    assert list(uw.categories) == list(expected)
    assert sum(uw.counts.values()) == 40
    frame = uw.to_frame()
    assert list(frame.columns) == ["layer", "channel", "static", "dynamic", "category"]
    assert len(frame) == 40


@pytest.mark.parametrize("bootstrap", [0, 7])
def test_any_sharding_merges_to_the_same_result(bootstrap):
    rng = np.random.default_rng(3)
    pairs = random_pairs(rng, n_static=90, n_dynamic=90, channels=9)
    ids = {f: list(range(90)) for f in ("static", "dynamic")}
    whole = PairStats(9, bootstrap=bootstrap, seed=5)
    for f in ("static", "dynamic"):
        whole.update(f, *pairs[f], ids=ids[f] if bootstrap else None)
    for cuts in ([1, 2, 50], [30, 31, 89], [45]):
        shards = []
        bounds = [0, *cuts, 90]
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            shard = PairStats(9, bootstrap=bootstrap, seed=5)
            for f in ("static", "dynamic"):
                z1, z2 = pairs[f]
                shard.update(f, z1[lo:hi], z2[lo:hi], ids=ids[f][lo:hi] if bootstrap else None)
            shards.append(shard)
        merged = shards[-1]
        for shard in shards[:-1]:  # merge order differs from data order on purpose
            merged.merge(shard)
        a, b = whole.layerwise(), merged.layerwise()
        for f in ("static", "dynamic"):
            assert a.scores[f] == pytest.approx(b.scores[f], abs=1e-12)
            np.testing.assert_allclose(whole.unitwise().scores[f], merged.unitwise().scores[f], atol=1e-12)
        np.testing.assert_allclose(a.replicate_fractions, b.replicate_fractions, atol=1e-12)


def test_huge_means_keep_precision():
    rng = np.random.default_rng(4)
    pairs = random_pairs(rng, channels=8)
    shifted = {f: tuple(z + 1e6 for z in pairs[f]) for f in pairs}
    stats = PairStats(8)
    for f in ("static", "dynamic"):
        z1, z2 = shifted[f]
        for lo in range(0, len(z1), 7):  # stream in small batches
            stats.update(f, z1[lo : lo + 7], z2[lo : lo + 7])
    ref = naive(pairs)  # same data without the offset: the exact answer
    result = stats.layerwise()
    for f in ("static", "dynamic"):
        assert result.scores[f] == pytest.approx(ref["scores"][f], rel=1e-9)
        np.testing.assert_allclose(stats.unitwise().scores[f], ref["unit"][f], rtol=1e-9)


def test_dead_channels_are_reported_not_nan():
    rng = np.random.default_rng(5)
    pairs = random_pairs(rng, channels=6)
    for f in pairs:
        for z in pairs[f]:
            z[:, 2] = 0.0  # a ReLU that never fires
            z[:, 4] = 3.7  # a constant channel
    uw = unitwise(pairs)
    assert uw.counts["dead"] == 2
    assert uw.categories[2] == "dead" and uw.categories[4] == "dead"
    assert np.isnan(uw.scores["static"][2])
    lw = layerwise(pairs)
    assert np.isfinite(lw.scores["static"]) and np.isfinite(lw.scores["dynamic"])
    assert np.isfinite(layerwise(pairs, method="pearson").scores["static"])


def test_bootstrap_interval_brackets_the_estimate_and_is_seeded():
    rng = np.random.default_rng(6)
    pairs = random_pairs(rng, n_static=200, n_dynamic=200, channels=10)
    a = layerwise(pairs, bootstrap=50, seed=1)
    b = layerwise(pairs, bootstrap=50, seed=1)
    c = layerwise(pairs, bootstrap=50, seed=2)
    lo, hi = a.interval()["static"]
    assert lo < a.fractions["static"] < hi
    assert hi - lo < 0.2
    np.testing.assert_array_equal(a.replicate_fractions, b.replicate_fractions)
    assert not np.array_equal(a.replicate_fractions, c.replicate_fractions)
    frame = a.to_frame()
    assert set(frame["factor"]) == {"static", "dynamic", "identical"}
    assert (frame["fraction_lo"] <= frame["fraction"]).all()
    summary = unitwise(pairs, bootstrap=20).summary()
    assert summary["percent"].sum() == pytest.approx(100.0)


def test_memory_is_independent_of_the_number_of_pairs():
    stats = PairStats(16)
    size = stats._flatten().nbytes
    rng = np.random.default_rng(7)
    for _ in range(20):
        z = rng.normal(size=(64, 16))
        stats.update("static", z, z)
    assert stats._flatten().nbytes == size
    assert stats.n_pairs["static"] == 1280


def test_state_dict_round_trip():
    rng = np.random.default_rng(8)
    pairs = random_pairs(rng)
    stats = PairStats(12, name="layer4")
    for f in ("static", "dynamic"):
        stats.update(f, *pairs[f])
    again = PairStats.from_state_dict(stats.state_dict())
    assert again.layerwise().scores == stats.layerwise().scores
    assert again.name == "layer4"


def test_bad_input_errors():
    z = np.zeros((5, 3))
    stats = PairStats(3, name="layer2")
    with pytest.raises(ValueError, match="unknown factor"):
        stats.update("motion", z, z)
    with pytest.raises(ValueError, match=r"expected 3 channels"):
        stats.update("static", np.zeros((5, 4)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        stats.update("static", np.zeros((5, 3, 2)), np.zeros((5, 3, 2)))
    bad = np.ones((5, 3))
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="layer 'layer2'.*NaN or infinite"):
        stats.update("dynamic", bad, z)
    bad[1, 1] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        stats.update("dynamic", z, bad)
    assert stats.n_pairs == {"static": 0, "dynamic": 0}  # nothing half-added
    stats.update("static", np.random.rand(1, 3), np.random.rand(1, 3))
    stats.update("dynamic", np.random.rand(4, 3), np.random.rand(4, 3))
    with pytest.raises(ValueError, match="at least 2 pairs"):
        stats.layerwise()
    with pytest.raises(ValueError, match="missing"):
        layerwise({"static": (z, z)})
    with pytest.raises(ValueError, match="cannot merge"):
        PairStats(3).merge(PairStats(4))


def test_torch_tensors_are_accepted():
    rng = np.random.default_rng(9)
    pairs = random_pairs(rng)
    as_torch = {f: tuple(torch.from_numpy(z).float() for z in pairs[f]) for f in pairs}
    a, b = layerwise(pairs), layerwise(as_torch)
    assert a.scores["static"] == pytest.approx(b.scores["static"], abs=1e-5)


WORKER = textwrap.dedent(
    """
    import sys, numpy as np, torch.distributed as dist
    from stdyn.core.estimator import PairStats
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    rng = np.random.default_rng(0)
    data = {f: (rng.normal(size=(40, 6)), rng.normal(size=(40, 6))) for f in ("static", "dynamic")}
    for f in data:
        data[f][1][:] += data[f][0] * (0.5 if f == "static" else 2.0)
    stats = PairStats(6, bootstrap=5, seed=3)
    for f, (z1, z2) in data.items():
        mine = np.arange(rank, 40, world)
        stats.update(f, z1[mine], z2[mine], ids=mine)
    stats.all_reduce()
    single = PairStats(6, bootstrap=5, seed=3)
    for f, (z1, z2) in data.items():
        single.update(f, z1, z2, ids=np.arange(40))
    a, b = stats.layerwise(), single.layerwise()
    assert stats.n_pairs == {"static": 40, "dynamic": 40}, stats.n_pairs
    for f in ("static", "dynamic"):
        assert abs(a.scores[f] - b.scores[f]) < 1e-12, (a.scores, b.scores)
    assert np.allclose(a.replicate_fractions, b.replicate_fractions, atol=1e-12)
    print("RANK_OK", rank)
    dist.destroy_process_group()
    """
)


def test_two_gloo_processes_give_the_single_process_result(tmp_path: Path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
         str(script)],
        capture_output=True, text=True, timeout=180, env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("RANK_OK") == 2


def test_factor_unit_scores_need_only_that_factor():
    rng = np.random.default_rng(10)
    pairs = random_pairs(rng)
    stats = PairStats(12)
    stats.update("static", *pairs["static"])
    np.testing.assert_allclose(stats.factor_unit_scores("static"), naive(pairs)["unit"]["static"], atol=1e-10)
    with pytest.raises(ValueError, match="at least 2 dynamic pairs"):
        stats.factor_unit_scores("dynamic")


def test_paired_estimates_give_intervals_of_differences():
    rng = np.random.default_rng(11)
    pairs = random_pairs(rng, n_static=150, n_dynamic=150)
    a = layerwise(pairs, bootstrap=40, seed=2)
    b = layerwise({f: (z1 * 1.0, z2 + 0.3 * rng.normal(size=z2.shape)) for f, (z1, z2) in pairs.items()},
                  bootstrap=40, seed=2)
    diff = a.percent("static") - b.percent("static")
    assert diff.value == pytest.approx(100 * (a.fractions["static"] - b.fractions["static"]))
    lo, hi = diff.interval()
    assert lo <= diff.value <= hi
    # pairing: the spread of the difference is narrower than the sum of the separate spreads
    assert hi - lo < np.ptp(a.percent("static").interval()) + np.ptp(b.percent("static").interval())
    assert "[" in str(diff)
    units = unitwise(pairs, bootstrap=40, seed=2).percent("joint")
    assert 0 <= units.value <= 100 and units.replicates.shape == (40,)
    with pytest.raises(ValueError, match="cannot be paired"):
        a.percent("static") - layerwise(pairs, bootstrap=5).percent("static")


def test_an_estimate_is_above_a_threshold_only_when_its_whole_interval_is():
    from stdyn.core.estimator import Estimate

    assert Estimate(1.0, np.linspace(0.2, 1.8, 401)).above(0.0)
    assert not Estimate(1.0, np.linspace(-0.2, 2.2, 401)).above(0.0)  # point above, interval not
    assert not Estimate(-1.0, np.linspace(-1.8, -0.2, 401)).above(0.0)
    # without an interval nothing is shown to lie above (regression: it compared the point value)
    assert not Estimate(0.5, np.array([])).above(0.0) and not Estimate(0.5, np.array([0.4])).above(0.0)


def test_an_interval_needs_two_replicates_and_bootstrap_cannot_be_negative():
    from stdyn.core.estimator import Estimate, PairStats

    # regression: one replicate gave the "interval" [30.7, 30.7] around an estimate of 42.8
    assert all(np.isnan(Estimate(42.8, np.array([30.7])).interval()))
    assert Estimate(42.8, np.array([30.7, 50.0])).interval() == pytest.approx((31.1825, 49.5175))
    with pytest.raises(ValueError, match="bootstrap must be 0"):
        PairStats(4, bootstrap=-1)


def test_an_undefined_estimate_prints_no_interval():
    from stdyn.core.estimator import Estimate

    assert str(Estimate(float("nan"), np.array([4.0, 4.0, np.nan]))) == "undefined"
    assert str(Estimate(2.0, np.full(5, 2.0))) == "2.0 [2.0, 2.0]"


@pytest.mark.parametrize("method", ["normalized", "pearson"])
def test_a_dead_layer_has_no_units_and_no_fractions_instead_of_an_error(method):
    from stdyn.core.estimator import layerwise

    constant = np.ones((40, 6))
    result = layerwise({"static": (constant, constant), "dynamic": (constant, constant)}, method=method)
    # regression: "cannot convert float NaN to integer", and pearson reported 21/21/58 %
    assert result.units == {"dynamic": 0, "static": 0, "identical": 0}
    assert np.isnan(result.fractions["dynamic"]) and np.isnan(result.fractions["static"])


def test_pair_statistics_carry_their_format_and_refuse_unknown_or_damaged_ones():
    from stdyn.core.estimator import STATE_FORMAT, PairStats

    stats = PairStats(3, bootstrap=2, name="layer4")
    rng = np.random.default_rng(0)
    stats.update("static", rng.normal(size=(5, 3)), rng.normal(size=(5, 3)), ids=list(range(5)))
    state = stats.state_dict()
    assert state["format"] == STATE_FORMAT
    again = PairStats.from_state_dict(state)
    assert np.array_equal(again.state_dict()["state"], state["state"])
    assert PairStats.from_state_dict({k: v for k, v in state.items() if k != "format"}).n_pairs == stats.n_pairs
    with pytest.raises(ValueError, match="format 'pairstats/9'.*measure again"):
        PairStats.from_state_dict({**state, "format": "pairstats/9"})
    with pytest.raises(ValueError, match="'layer4' hold .* numbers; .* expected"):
        PairStats.from_state_dict({**state, "state": state["state"][:-1]})
