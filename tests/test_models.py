"""stdyn.models: the registry, the stage contract, and what makes each architecture itself."""
from __future__ import annotations

import textwrap

import pandas as pd
import pytest
import torch
from torch import nn

from stdyn.models import ACTION_MODELS, Stage, available, create, describe, prepare_input
from stdyn.models.action.slowfast import SlowFast
from stdyn.models.layers import DepthwiseConv3d

torch.set_num_threads(1)

NUM_CLASSES = 5
CNNS = ("c2d", "i3d", "x3d", "slowonly", "fastonly")


def clips(batch: int = 2, frames: int = 8, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, frames, size, size, generator=torch.Generator().manual_seed(seed))


def stage_outputs(model: nn.Module, inputs, stages: list[Stage] | None = None) -> tuple[torch.Tensor, dict]:
    """Run ``model`` and collect the output of every stage module."""
    modules = dict(model.named_modules())
    outputs: dict[str, torch.Tensor] = {}
    handles = [
        modules[s.name].register_forward_hook(lambda m, i, o, name=s.name: outputs.__setitem__(name, o))
        for s in stages or model.stages
    ]
    try:
        logits = model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return logits, outputs


def channels_of(output: torch.Tensor) -> int:
    """C of (B, C, T, H, W) / (B, C, H, W), or of tokens (B, N, C)."""
    return output.shape[-1] if output.ndim == 3 else output.shape[1]


@pytest.mark.parametrize("name", ACTION_MODELS)
def test_model_classifies_clips_and_its_stages_have_the_declared_channels(name):
    model = create(name, NUM_CLASSES, seed=0).eval()
    modules = dict(model.named_modules())
    assert all(stage.name in modules for stage in model.stages)

    with torch.no_grad():
        logits, outputs = stage_outputs(model, prepare_input(model, clips()))

    assert logits.shape == (2, NUM_CLASSES)
    assert torch.isfinite(logits).all()
    assert set(outputs) == {s.name for s in model.stages}
    for stage in model.stages:
        assert channels_of(outputs[stage.name]) == stage.channels, stage.name
    assert isinstance(model.head.pool, nn.Module)
    assert model.head.fc.out_features == NUM_CLASSES


@pytest.mark.parametrize("name", CNNS)
def test_cnns_expose_five_stages(name):
    assert [s.name for s in create(name, NUM_CLASSES).stages] == [f"stage{k}" for k in range(1, 6)]


@pytest.mark.parametrize("name", ["timesformer", "mvit"])
def test_transformers_expose_every_block(name):
    model = create(name, NUM_CLASSES, depth=5) if name == "timesformer" else create(name, NUM_CLASSES)
    assert [s.name for s in model.stages] == [f"blocks.{i}" for i in range(len(model.blocks))]
    assert {s.kind for s in model.stages} == {"block"}


def test_head_pools_to_features_that_are_measurable_by_name():
    model = create("slowonly", NUM_CLASSES, dropout=0.3, seed=0).eval()
    pool = dict(model.named_modules())["head.pool"]
    with torch.no_grad():
        _, outputs = stage_outputs(model, clips(), [Stage("head.pool", 0), Stage("stage5", 0)])
    pooled = outputs["head.pool"]
    assert pool is model.head.pool
    assert pooled.shape == (2, model.head.fc.in_features)
    torch.testing.assert_close(pooled, outputs["stage5"].mean(dim=(2, 3, 4)))
    torch.testing.assert_close(model.head.features(outputs["stage5"]), pooled)
    assert isinstance(model.head.dropout, nn.Dropout) and model.head.dropout.p == 0.3
    assert isinstance(create("slowonly", NUM_CLASSES).head.dropout, nn.Identity)


def test_c2d_has_no_temporal_kernels_so_frame_order_does_not_matter():
    model = create("c2d", NUM_CLASSES, seed=0).eval()
    x = clips()
    shuffled = x[:, :, torch.randperm(x.shape[2], generator=torch.Generator().manual_seed(1))]
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(shuffled), rtol=1e-4, atol=1e-5)
    assert all(m.kernel_size[0] == 1 for m in model.modules() if isinstance(m, nn.Conv3d))


def test_i3d_depends_on_frame_order_and_halves_time_in_the_stem():
    model = create("i3d", NUM_CLASSES, seed=0).eval()
    x = clips()
    with torch.no_grad():
        assert not torch.allclose(model(x), model(x.flip(2)), atol=1e-4)
        _, outputs = stage_outputs(model, clips(frames=16))
    assert [outputs[f"stage{k}"].shape[2] for k in range(1, 6)] == [8] * 5


def test_slowonly_has_temporal_kernels_only_in_stage4_and_stage5_on_a_low_frame_rate():
    model = create("slowonly", NUM_CLASSES, frame_stride=4)
    for k in range(1, 6):
        kernels = {m.kernel_size[0] for m in getattr(model, f"stage{k}").modules() if isinstance(m, nn.Conv3d)}
        assert (max(kernels) > 1) == (k >= 4), (k, kernels)
    with torch.no_grad():
        _, outputs = stage_outputs(model.eval(), clips(frames=16))
    assert outputs["stage1"].shape[2] == 4  # every 4th of 16 frames


def test_fastonly_is_lightweight_with_temporal_kernels_throughout():
    fast = create("fastonly", NUM_CLASSES)
    slow = create("slowonly", NUM_CLASSES)
    for k in range(1, 6):
        kernels = [m.kernel_size[0] for m in getattr(fast, f"stage{k}").modules() if isinstance(m, nn.Conv3d)]
        assert max(kernels) > 1
    assert all(f.channels >= 8 for f in fast.stages)
    assert all(f.channels < s.channels for f, s in zip(fast.stages, slow.stages))
    assert fast.stages[-1].channels == slow.stages[-1].channels // 8


def test_x3d_uses_expanded_depthwise_3d_convolutions():
    model = create("x3d", NUM_CLASSES, width=16, expansion=2.25)
    depthwise = [
        m for m in model.stage5.modules() if isinstance(m, nn.Conv3d) and m.groups > 1 and m.kernel_size == (3, 3, 3)
    ]
    assert depthwise and all(m.groups == m.in_channels == round(128 * 2.25) for m in depthwise)


@pytest.mark.parametrize(
    "kernel, stride, shape, channels_last",
    [
        ((3, 3, 3), (1, 2, 2), (2, 6, 5, 9, 8), True),  # odd and even sizes under a stride
        ((3, 3, 3), (2, 2, 2), (1, 4, 7, 7, 6), False),
        ((5, 1, 1), (1, 1, 1), (2, 4, 7, 4, 4), True),
        ((3, 1, 3), (1, 1, 3), (3, 5, 6, 5, 10), False),  # a stride that skips the last input columns
    ],
)
def test_depthwise_conv3d_matches_the_plain_convolution_and_its_gradients(kernel, stride, shape, channels_last):
    conv = DepthwiseConv3d(shape[1], kernel, stride)
    reference = nn.Conv3d(shape[1], shape[1], kernel, stride, tuple(k // 2 for k in kernel), groups=shape[1], bias=False)
    reference.weight.data.copy_(conv.weight.data)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    x.requires_grad_()
    out, expected = conv(x), reference(x)
    torch.testing.assert_close(out, expected)
    grad = torch.randn_like(out)
    grads = torch.autograd.grad(out, (x, conv.weight), grad)
    expected_grads = torch.autograd.grad(expected, (x, reference.weight), grad)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want)


def test_timesformer_attention_is_divided_into_time_then_space():
    model = create("timesformer", NUM_CLASSES, dim=32, heads=2, seed=0)
    assert model.blocks[0].time_fc.weight.abs().sum() > 0  # as in TimeSformer, only the first block
    block = model.blocks[1]  # starts with its temporal branch on
    frames, height, width = 4, 3, 3
    grid = (frames, height, width)
    x = torch.randn(1, frames * height * width, 32)

    def changed(perturbed_tokens: torch.Tensor) -> torch.Tensor:
        """Which (frame, position) outputs change when the given input tokens change."""
        y = x.clone()
        y[:, perturbed_tokens] += 1.0
        with torch.no_grad():
            diff = (block(y, grid) - block(x, grid)).abs().sum(-1)
        return diff.view(frames, height * width) > 1e-6

    first_frame = torch.arange(height * width)
    first_position = torch.arange(frames) * height * width
    # temporal branch off (as initialised): frames never mix
    assert changed(first_frame)[0].all() and not changed(first_frame)[1:].any()
    # temporal branch on, spatial attention and MLP off: positions never mix
    nn.init.normal_(block.time_fc.weight)
    for layer in (block.attn_space.proj, block.mlp[-1]):
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)
    assert changed(first_position)[:, 0].all() and not changed(first_position)[:, 1:].any()


def test_mvit_pools_tokens_and_widens_channels_from_scale_to_scale():
    model = create("mvit", NUM_CLASSES, dim=16, stage_depths=(1, 2, 2), seed=0).eval()
    with torch.no_grad():
        _, outputs = stage_outputs(model, clips(frames=16))
    tokens = [outputs[s.name].shape[1] for s in model.stages]
    assert tokens == [512, 128, 128, 32, 32]  # 8x8x8 grid, then 8x4x4, then 8x2x2
    assert [s.channels for s in model.stages] == [32, 32, 64, 64, 64]
    assert model.blocks[0].attn.pool_k is not None  # keys and values pooled from the start


@pytest.mark.parametrize(
    "name, stage, frames_seen",
    [
        ("x3d", "stage1", lambda out: out.shape[2]),
        ("mvit", "blocks.0", lambda out: out.shape[1] // 64 * 2),  # 8x8 tokens per 2 frames
    ],
)
def test_frame_stride_feeds_every_other_frame(name, stage, frames_seen):
    x = clips(frames=16)
    counts = []
    for stride in (1, 2):
        model = create(name, NUM_CLASSES, frame_stride=stride, seed=0).eval()
        with torch.no_grad():
            _, outputs = stage_outputs(model, x, [Stage(stage, 0)])
        counts.append(frames_seen(outputs[stage]))
    assert counts == [16, 8]


def test_slowfast_packs_pathways_at_two_frame_rates():
    model = create("slowfast", NUM_CLASSES, alpha=4)
    x = clips(frames=16)
    slow, fast = prepare_input(model, x)
    torch.testing.assert_close(slow, x[:, :, ::4])
    assert fast is x
    single = create("c2d", NUM_CLASSES)
    assert prepare_input(single, x) is x


def test_slowfast_stages_are_branch_outputs_before_fusion():
    model: SlowFast = create("slowfast", NUM_CLASSES, seed=0).eval()
    assert [s.kind for s in model.stages[:2]] == ["slow", "fast"]
    fusion_after_stage2 = Stage("fusions.1", 0)
    x = clips(frames=16)
    with torch.no_grad():
        _, outputs = stage_outputs(model, model.pack_input(x), [*model.stages, fusion_after_stage2])
        slow_channels = model.stages[2].channels
        fused = outputs["fusions.1"]
        # the fusion output starts with the measured slow features, then the lateral fast features
        assert fused.shape[1] > slow_channels
        torch.testing.assert_close(fused[:, :slow_channels], outputs["slow.stage2"])

        # the fast pathway never sees the slow one; slow.stage1 comes before any fusion
        slow, fast = model.pack_input(x)
        _, slow_changed = stage_outputs(model, [torch.rand_like(slow), fast])
        _, fast_changed = stage_outputs(model, [slow, torch.rand_like(fast)])
    for k in range(1, 6):
        torch.testing.assert_close(slow_changed[f"fast.stage{k}"], outputs[f"fast.stage{k}"])
    torch.testing.assert_close(fast_changed["slow.stage1"], outputs["slow.stage1"])
    assert not torch.allclose(fast_changed["slow.stage3"], outputs["slow.stage3"])


def test_slowfast_rejects_mismatched_pathways():
    model = create("slowfast", NUM_CLASSES, alpha=4)
    x = clips(frames=16)
    with pytest.raises(ValueError, match="pack_input"):
        model([x, x])


def test_available_lists_every_model():
    names = available()
    assert set(ACTION_MODELS) <= set(names)
    assert {"r3d_18", "mc3_18", "r2plus1d_18", "s3d", "mvit_v1_b", "mvit_v2_s", "swin3d_t"} <= set(names)


def test_describe_gives_one_row_per_stage():
    model = create("slowfast", NUM_CLASSES)
    frame = describe(model)
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == ["name", "channels", "kind"]
    assert frame["name"].tolist() == [s.name for s in model.stages]
    assert frame["channels"].tolist() == [s.channels for s in model.stages]
    assert describe("c2d", width=8)["channels"].tolist() == [8, 8, 16, 32, 64]


def test_unknown_name_lists_the_names_and_suggests_close_ones():
    with pytest.raises(ValueError, match="slowfast") as error:
        create("slowfst", NUM_CLASSES)
    assert "Did you mean" in str(error.value) and "r3d_18" in str(error.value)


def test_unknown_keyword_names_the_accepted_ones():
    with pytest.raises(TypeError, match="width"):
        create("c2d", NUM_CLASSES, widht=8)


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.rand(2, 8, 3, 32, 32), r"\(B, 3, T, H, W\).*frames first"),
        (torch.rand(3, 8, 32, 32), r"\(B, 3, T, H, W\).*batch dimension"),
        ((torch.rand(2, 3, 8, 32, 32) * 255).to(torch.uint8), r"dtype"),
        (torch.rand(2, 3, 8, 32, 32) * 255, r"\[0, 1\]"),
    ],
)
def test_wrong_input_names_the_expected_layout(bad, message):
    model = create("c2d", NUM_CLASSES)
    with pytest.raises(ValueError, match=message):
        model(bad)


def test_seed_gives_the_same_model_and_leaves_global_random_state_alone():
    state = torch.random.get_rng_state()
    a = create("mvit", NUM_CLASSES, seed=3)
    b = create("mvit", NUM_CLASSES, seed=3)
    c = create("mvit", NUM_CLASSES, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb), name
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


def test_weights_file_round_trip(tmp_path):
    trained = create("slowfast", NUM_CLASSES, seed=0)
    path = tmp_path / "slowfast.pth"
    torch.save(trained.state_dict(), path)
    loaded = create("slowfast", NUM_CLASSES, weights=path, seed=1)
    for (name, a), b in zip(trained.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name

    # a training checkpoint of a DistributedDataParallel model loads too
    checkpoint = tmp_path / "checkpoint.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in trained.state_dict().items()}}, checkpoint)
    reloaded = create("slowfast", NUM_CLASSES, weights=checkpoint, seed=2)
    assert torch.equal(reloaded.head.fc.weight, trained.head.fc.weight)


def test_weights_that_do_not_fit_are_refused_with_the_path(tmp_path):
    path = tmp_path / "c2d.pth"
    torch.save(create("c2d", NUM_CLASSES).state_dict(), path)
    with pytest.raises(ValueError, match="c2d.pth"):
        create("c2d", NUM_CLASSES + 1, weights=path)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        create("c2d", NUM_CLASSES, weights=tmp_path / "missing.pth")


USER_MODULE = textwrap.dedent(
    """
    import torch
    from torch import nn
    from stdyn.models import Stage

    def plain(num_classes):
        return nn.Sequential(
            nn.Conv3d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv3d(8, 12, 3, stride=2, padding=1),
            nn.AdaptiveAvgPool3d(1),
            nn.Flatten(),
            nn.Linear(12, num_classes),
        )

    class Described(nn.Module):
        def __init__(self, width=4):
            super().__init__()
            self.body = nn.Conv3d(3, width, 1)
            self.stages = [Stage("body", width, "stage")]

        def forward(self, x):
            return self.body(x).mean(dim=(2, 3, 4))
    """
)


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "user_video_models.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "user_video_models"


def test_import_path_models_get_top_level_stages(user_module):
    model = create(f"{user_module}:plain", NUM_CLASSES)
    assert [s.name for s in model.stages] == ["0", "1", "2", "3", "4", "5"]
    with torch.no_grad():
        logits, outputs = stage_outputs(model, clips())
    assert logits.shape == (2, NUM_CLASSES)
    for stage in model.stages:
        output = outputs[stage.name]
        assert (output.shape[1]) == stage.channels, stage.name

    described = create(f"{user_module}:Described", NUM_CLASSES, width=6)  # no num_classes parameter
    assert described.stages == [Stage("body", 6, "stage")]
    with pytest.raises(ValueError, match="no 'nothing'"):
        create(f"{user_module}:nothing", NUM_CLASSES)


@pytest.fixture
def no_downloads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def test_torchvision_r3d_18_is_measurable_and_loads_torchvision_checkpoints(no_downloads, tmp_path):
    model = create("r3d_18", NUM_CLASSES, seed=0).eval()
    assert [s.name for s in model.stages] == ["net.stem", "net.layer1", "net.layer2", "net.layer3", "net.layer4"]
    with torch.no_grad():
        logits, outputs = stage_outputs(model, clips(batch=1))
    assert logits.shape == (1, NUM_CLASSES)
    assert [channels_of(outputs[s.name]) for s in model.stages] == [s.channels for s in model.stages]

    path = tmp_path / "r3d_18.pth"
    torch.save(model.net.state_dict(), path)  # torchvision's own key layout
    loaded = create("r3d_18", NUM_CLASSES, weights=path, seed=1)
    assert torch.equal(loaded.net.fc.weight, model.net.fc.weight)


def test_torchvision_swin3d_blocks_are_measured_channels_first_and_flow_on(no_downloads):
    model = create("swin3d_t", NUM_CLASSES, seed=0).eval()
    assert len(model.stages) == 12 and model.stages[0].name == "net.features.0.0.out"
    x = clips(batch=1)
    with torch.no_grad():
        logits, outputs = stage_outputs(model, x)
        assert [channels_of(outputs[s.name]) for s in model.stages] == [s.channels for s in model.stages]
        assert outputs[model.stages[0].name].ndim == 5
        # what happens at a measured block reaches the logits (unit removal relies on it)
        tap = dict(model.named_modules())[model.stages[-1].name]
        handle = tap.register_forward_hook(lambda m, i, o: torch.zeros_like(o))
        ablated = model(x)
        handle.remove()
    assert not torch.allclose(logits, ablated)


def test_torchvision_s3d_and_mvit_describe_their_blocks(no_downloads):
    s3d = create("s3d", NUM_CLASSES).eval()
    with torch.no_grad():
        _, outputs = stage_outputs(s3d.net.features, s3d.normalize(clips(batch=1)), [
            Stage(s.name.removeprefix("net.features."), s.channels) for s in s3d.stages
        ])
    assert [o.shape[1] for o in outputs.values()] == [s.channels for s in s3d.stages]

    mvit = create("mvit_v2_s", NUM_CLASSES)
    assert len(mvit.stages) == 16 and mvit.stages[-1].channels == 768
    with pytest.raises(ValueError, match=r"\(B, 3, 16, 224, 224\)"):
        mvit(clips(batch=1))


def test_timesformer_stems_give_the_same_token_grid():
    x = clips()
    for stem in ("conv", "patch"):
        model = create("timesformer", NUM_CLASSES, dim=32, heads=2, patch=8, stem=stem, seed=0).eval()
        tokens, grid = model.embed(model.sample(model.normalize(x)))
        assert grid == (x.shape[2] // 2, x.shape[3] // 8, x.shape[4] // 8)
        assert tokens.shape == (x.shape[0], grid[0] * grid[1] * grid[2], 32)
        assert model(x).shape == (x.shape[0], NUM_CLASSES)
    with pytest.raises(ValueError, match="conv"):
        create("timesformer", NUM_CLASSES, stem="linear")
    with pytest.raises(ValueError, match="power of two"):
        create("timesformer", NUM_CLASSES, stem="conv", patch=6)
