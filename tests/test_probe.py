"""The probe and ``measure``: pooling, layer names, bad input, sharding and the planted network."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import stdyn
from stdyn.core.planted import PlantedNet, moving_object_clips
from stdyn.core.probe import Measurement, Probe, check_layers, pool


class TinyVideoNet(nn.Module):
    """Two 3D conv stages and a token stage, enough to exercise every pooling layout."""

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), nn.ReLU())
        self.stage2 = nn.Sequential(nn.Conv3d(4, 6, (3, 3, 3), padding=1), nn.ReLU())
        self.tokens = nn.Identity()
        self.fc = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.stage1(x))
        tokens = self.tokens(x.flatten(2).transpose(1, 2))  # (B, N, C)
        return self.fc(tokens.mean(1))


class TwoPathwayNet(nn.Module):
    """Takes [slow, fast] like SlowFast."""

    def __init__(self) -> None:
        super().__init__()
        self.slow = nn.Conv3d(3, 4, 3, padding=1)
        self.fast = nn.Conv3d(3, 2, 3, padding=1)

    def pack_input(self, clips: torch.Tensor) -> list[torch.Tensor]:
        return [clips[:, :, ::4], clips]

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        slow, fast = x
        return self.slow(slow).mean((2, 3, 4)).sum(1) + self.fast(fast).mean((2, 3, 4)).sum(1)


def clips(n: int = 12, frames: int = 8, size: int = 16, seed: int = 0) -> torch.Tensor:
    return moving_object_clips(n, frames=frames, size=size, seed=seed)


def test_pool_layouts():
    assert pool(torch.ones(2, 3, 4, 5, 6)).shape == (2, 3)
    assert pool(torch.ones(2, 3, 5, 6)).shape == (2, 3)
    tokens = torch.arange(24.0).reshape(2, 4, 3)
    torch.testing.assert_close(pool(tokens), tokens.mean(1))
    assert pool((torch.ones(2, 7, 3), (1, 2, 2))).shape == (2, 3)
    channels_last = torch.rand(2, 4, 5, 5, 3)
    torch.testing.assert_close(pool(channels_last, "BTHWC"), channels_last.mean((1, 2, 3)))
    with pytest.raises(ValueError, match=r"expected one of \(B, C, T, H, W\)"):
        pool(torch.ones(2, 3, 4, 5, 6, 7), name="weird")
    with pytest.raises(TypeError, match="not a tensor"):
        pool({"a": 1}, name="dicty")


def test_unknown_layer_lists_available_and_close_matches():
    model = TinyVideoNet()
    with pytest.raises(KeyError) as err:
        check_layers(model, ["stage1", "stage_2"])
    message = str(err.value)
    assert "'stage_2'" in message and "did you mean 'stage2'" in message
    assert "Available layers: stage1" in message and "fc" in message


def test_probe_returns_pooled_features_and_removes_hooks():
    model = TinyVideoNet()
    x = torch.rand(3, 3, 4, 8, 8)
    with Probe(model, ["stage1", "tokens"]) as probe:
        features = probe(x)
    assert features["stage1"].shape == (3, 4)
    assert features["tokens"].shape == (3, 6)
    torch.testing.assert_close(features["stage1"], model.stage1(x).mean((2, 3, 4)))
    assert all(not m._forward_hooks for m in model.modules())


def test_measure_is_deterministic_and_independent_of_batch_size():
    torch.manual_seed(0)
    model = TinyVideoNet()
    data = clips()
    a = stdyn.measure(model, data, ["stage1", "stage2", "tokens"], batch_size=4, seed=3, progress=False)
    b = stdyn.measure(model, data, ["stage1", "stage2", "tokens"], batch_size=4, seed=3, progress=False)
    c = stdyn.measure(model, data, ["stage1", "stage2", "tokens"], batch_size=12, seed=3, progress=False)
    d = stdyn.measure(model, data, ["stage1", "stage2", "tokens"], batch_size=4, seed=4, progress=False)
    fa, fb, fc, fd = (m.to_frame() for m in (a, b, c, d))
    assert fa.equals(fb)
    np.testing.assert_allclose(fa["score"], fc["score"], rtol=1e-5)
    assert not np.allclose(fa["score"], fd["score"])
    assert list(fa.columns[:3]) == ["layer", "depth", "factor"]
    assert a.layerwise("stage2").n_pairs == {"static": 12, "dynamic": 12}
    units = a.units_frame()
    assert set(units["category"]) == {"dynamic", "static", "joint", "residual", "dead"}
    assert units.groupby("layer")["count"].sum().to_dict() == {"stage1": 4, "stage2": 6, "tokens": 6}


def test_measure_accepts_datasets_of_tuples_and_multi_pathway_models():
    data = [(clip, label) for label, clip in enumerate(clips(6))]
    result = stdyn.measure(TwoPathwayNet(), data, ["slow", "fast"], batch_size=3, progress=False)
    assert result.layers == ["slow", "fast"]
    assert result.unitwise("fast").scores["static"].shape == (2,)


def test_measurement_save_and_load_round_trip(tmp_path: Path):
    result = stdyn.measure(TinyVideoNet(), clips(6), ["stage1"], progress=False)
    path = tmp_path / "m.pt"
    result.save(path)
    again = Measurement.load(path)
    assert again.to_frame().equals(result.to_frame())
    with pytest.raises(KeyError, match="measured layers"):
        again.layerwise("stage9")


def test_bad_input_errors():
    model = TinyVideoNet()
    with pytest.raises(ValueError, match=r"expected each clip shaped \(3, T, H, W\)"):
        stdyn.measure(model, torch.rand(4, 8, 3, 16, 16), ["stage1"], progress=False)
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        stdyn.measure(model, clips(4) * 255, ["stage1"], progress=False)
    with pytest.raises(ValueError, match="at least 2 clips"):
        stdyn.measure(model, clips(1), ["stage1"], progress=False)
    with pytest.raises(KeyError, match="did you mean 'stage1'"):
        stdyn.measure(model, clips(4), ["stage_1"], progress=False)
    with pytest.raises(ValueError, match="unknown pairs"):
        stdyn.measure(model, clips(4), ["stage1"], pairs="optical", progress=False)
    with pytest.raises(ValueError, match="declares no stages"):
        stdyn.measure(model, clips(4), progress=False)

    class Exploding(TinyVideoNet):
        def forward(self, x):
            return self.tokens(self.stage1(x) * float("inf"))

    with pytest.raises(ValueError, match="layer 'tokens'.*NaN or infinite"):
        stdyn.measure(Exploding(), clips(4), ["tokens"], progress=False)


def test_bad_clips_get_errors_that_name_the_problem_and_the_way_out():
    model = TinyVideoNet()
    broken = clips(4)
    broken[2, 0, 0, 0, 0] = float("nan")  # regression: "index -9223372036854775808 is out of bounds" in stylize
    with pytest.raises(ValueError, match=r"clip\(s\) \[2\] hold NaN or infinite values"):
        stdyn.measure(model, broken, ["stage1"], progress=False)
    with pytest.raises(ValueError, match="0-255 pixel values: divide by 255"):
        stdyn.measure(model, clips(4) * 255, ["stage1"], progress=False)
    with pytest.raises(ValueError, match="expected float clips.*uint8.*/ 255"):
        stdyn.measure(model, (clips(4) * 255).to(torch.uint8), ["stage1"], progress=False)
    with pytest.raises(ValueError, match=r"the clips differ in shape.*resize them"):
        stdyn.measure(model, [clips(1)[0], clips(1)[0], torch.rand(3, 8, 20, 20)], ["stage1"], batch_size=3,
                      progress=False)
    # float64 and float16 clips measure as their float32 values do
    for dtype in (torch.float64, torch.float16):
        converted = clips(4).to(dtype).float()
        expected = stdyn.measure(model, converted, ["stage1"], progress=False).layerwise("stage1").fractions
        measured = stdyn.measure(model, clips(4).to(dtype), ["stage1"], progress=False).layerwise("stage1").fractions
        assert measured == pytest.approx(expected)


def test_planted_network_channels_are_recovered():
    model = PlantedNet()
    data = moving_object_clips(160, frames=12, size=32, seed=1)
    result = stdyn.measure(model, data, batch_size=32, seed=0, progress=False)
    measured = result.unitwise("readout").categories
    correct = np.mean(measured == np.array(model.planted))
    wrong = [(i, p, m) for i, (p, m) in enumerate(zip(model.planted, measured)) if p != m]
    assert correct >= 0.95, wrong
    layer = result.layerwise("readout")
    assert layer.units["identical"] + layer.units["static"] + layer.units["dynamic"] == len(model.planted)


def test_planted_recovery_has_a_replicate_per_bootstrap_replicate():
    from stdyn.core.planted import recovery

    model = PlantedNet()
    result = stdyn.measure(model, moving_object_clips(64, frames=8, size=32, seed=1), batch_size=32,
                           bootstrap=10, progress=False)
    categories = result.unitwise("readout").categories
    found = recovery(result.stats["readout"], model.planted)
    assert found.value == pytest.approx(100 * np.mean(categories == np.array(model.planted)))
    assert found.replicates.shape == (10,) and np.isfinite(found.replicates).all()
    wrong = ["static"] * len(model.planted)
    assert recovery(result.stats["readout"], wrong).value == pytest.approx(100 * np.mean(categories == "static"))
    with pytest.raises(ValueError, match="planted categories"):
        recovery(result.stats["readout"], ["static"])


WORKER = textwrap.dedent(
    """
    import numpy as np, torch, torch.distributed as dist
    import stdyn
    from stdyn.core.planted import PlantedNet, moving_object_clips
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    data = moving_object_clips(24, frames=8, size=16, seed=2)
    sharded = stdyn.measure(PlantedNet(), data, batch_size=5, bootstrap=4, progress=False)
    dist.destroy_process_group()
    single = stdyn.measure(PlantedNet(), data, batch_size=7, bootstrap=4, progress=False)
    a, b = sharded.to_frame(), single.to_frame()
    assert sharded.layerwise("readout").n_pairs == {"static": 24, "dynamic": 24}
    assert np.allclose(a["score"], b["score"], rtol=1e-9, atol=1e-12), (a, b)
    assert np.allclose(a["fraction_lo"], b["fraction_lo"], rtol=1e-9)
    print("RANK_OK")
    """
)


def test_two_gloo_processes_measure_the_single_process_result(tmp_path: Path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", str(script)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("RANK_OK") == 2


def test_a_layer_with_several_output_tensors_says_which_to_measure():
    from stdyn.core.probe import select_output

    class AuxBlock(nn.Module):
        def forward(self, x):
            return x.mean(1, keepdim=True), x  # (aux, features): regression, the aux was measured silently

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = AuxBlock()

        def forward(self, x):
            return self.block(x)[1]

    with pytest.raises(ValueError, match=r"'block' returns a tuple with 2 tensors.*outputs=\{'block'"):
        stdyn.measure(Net(), clips(4), ["block"], progress=False)
    picked = stdyn.measure(Net(), clips(4), ["block"], outputs={"block": 1}, progress=False)
    assert picked.stats["block"].n_channels == 3
    x = torch.rand(2, 3)
    assert select_output((x, (4, 4)), name="b") is x  # one tensor and its shape: no question
    assert select_output({"a": x, "b": x + 1}, "b", name="b").equal(x + 1)
    with pytest.raises(KeyError, match=r"no element 'c'; its elements are \['a', 'b'\]"):
        select_output({"a": x, "b": x}, "c", name="b")
