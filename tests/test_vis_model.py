"""stdyn.models.vis: the VisTR-like video instance segmentation model, its packed outputs and stages."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stdyn.core.probe import Probe
from stdyn.models import VIS_MODELS, available, create, describe
from stdyn.models.vis import FrameConv3d, VisTR, pack_outputs, parameter_count, position_encoding, unpack_outputs, vistr

torch.set_num_threads(1)

NUM_CLASSES = 4
QUICK = {"width": 8, "dim": 32, "heads": 2, "encoder_layers": 2, "decoder_layers": 2, "queries": 6}


def clips(batch: int = 2, frames: int = 8, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, frames, size, size, generator=torch.Generator().manual_seed(seed))


def stage_outputs(model: nn.Module, inputs: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    modules = dict(model.named_modules())
    outputs: dict[str, torch.Tensor] = {}
    handles = [modules[s.name].register_forward_hook(lambda m, i, o, name=s.name: outputs.__setitem__(name, o))
               for s in model.stages]
    try:
        result = model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return result, outputs


@pytest.fixture(scope="module")
def model() -> VisTR:
    return create("vistr_r50", NUM_CLASSES, seed=0, **QUICK)


@pytest.mark.parametrize("frames, size", [(8, 32), (8, 16), (4, 24)])
def test_outputs_pack_class_and_mask_logits_for_any_clip_size(model, frames, size):
    outputs = model(clips(2, frames, size))
    assert outputs.shape == (2, 6, NUM_CLASSES + 1 + frames * size * size)
    class_logits, mask_logits = unpack_outputs(outputs, frames, size, size)
    assert class_logits.shape == (2, 6, NUM_CLASSES + 1)
    assert mask_logits.shape == (2, 6, frames, size, size)
    parts = model.forward_parts(clips(2, frames, size))
    assert torch.allclose(parts[0], class_logits, atol=1e-5) and torch.allclose(parts[1], mask_logits, atol=1e-5)


def test_pack_and_unpack_round_trip_and_refuse_sizes_that_do_not_fit():
    class_logits, mask_logits = torch.randn(3, 5, 7), torch.randn(3, 5, 2, 4, 6)
    packed = pack_outputs(class_logits, mask_logits)
    assert packed.shape == (3, 5, 7 + 2 * 4 * 6)
    back = unpack_outputs(packed, 2, 4, 6)
    assert torch.equal(back[0], class_logits) and torch.equal(back[1], mask_logits)
    with pytest.raises(ValueError, match=r"T\*H\*W = 8\*32\*32 = 8192.*at least 8194"):
        unpack_outputs(packed, 8, 32, 32)
    with pytest.raises(ValueError, match=r"\(B, Q, K \+ 1\) and mask logits \(B, Q, T, H, W\)"):
        pack_outputs(class_logits, mask_logits[:, :4])


def test_stages_are_named_modules_that_output_tokens_of_width_dim(model):
    assert [(s.name, s.channels, s.kind) for s in model.stages] == [
        ("encoder1", 32, "encoder"), ("encoder2", 32, "encoder"), ("decoder1", 32, "decoder"), ("decoder2", 32, "decoder")]
    assert describe(model)["name"].tolist() == ["encoder1", "encoder2", "decoder1", "decoder2"]
    assert model.num_classes == NUM_CLASSES and model.num_queries == 6
    _, outputs = stage_outputs(model, clips(2))
    for name in ("encoder1", "encoder2"):
        assert outputs[name].shape == (2, 8 * 4 * 4, 32)  # T x (32 / 8)^2 tokens
    for name in ("decoder1", "decoder2"):
        assert outputs[name].shape == (2, 6 * 8, 32)  # queries x T
    with Probe(model, [s.name for s in model.stages]) as probe:  # the measurement path: pooled (B, dim)
        features = probe(clips(2))
    assert all(f.shape == (2, 32) and torch.isfinite(f).all() for f in features.values())


def test_evaluation_mode_gives_the_same_outputs_with_and_without_autograd():
    model = create("vistr_r50", NUM_CLASSES, seed=1, **QUICK).eval()
    x = clips(2, seed=1)
    with_grad = model(x)  # PyTorch's transformer layers take a fused fast path without autograd
    with torch.inference_mode():
        without = model(x)
    assert torch.allclose(with_grad, without, atol=1e-4)


def test_r101_has_twice_the_backbone_blocks_of_r50_at_the_same_widths():
    r50 = create("vistr_r50", NUM_CLASSES, seed=0, **QUICK)
    r101 = create("vistr_r101", NUM_CLASSES, seed=0, **QUICK)

    def blocks(m: VisTR) -> list[int]:
        return [len(getattr(m.backbone, f"layer{k}")) for k in range(1, 5)]

    assert blocks(r50) == [1, 1, 1, 1] and blocks(r101) == [2, 2, 2, 2]
    assert r50.backbone.widths == r101.backbone.widths == (8, 16, 32, 64)
    assert parameter_count(r101) > 1.4 * parameter_count(r50)
    assert [len(getattr(vistr(2, blocks=(1, 2, 3, 1)).backbone, f"layer{k}")) for k in range(1, 5)] == [1, 2, 3, 1]
    assert r101(clips(1)).shape == r50(clips(1)).shape


def test_seed_makes_the_model_deterministic():
    a = create("vistr_r50", NUM_CLASSES, seed=3, **QUICK)
    b = create("vistr_r50", NUM_CLASSES, seed=3, **QUICK)
    c = create("vistr_r50", NUM_CLASSES, seed=4, **QUICK)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))
    x = clips(2)
    assert torch.equal(a(x), b(x))


def test_gradients_reach_every_parameter():
    model = create("vistr_r101", NUM_CLASSES, seed=0, **QUICK)
    class_logits, mask_logits = model.forward_parts(clips(2))
    (class_logits.square().mean() + mask_logits.square().mean()).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_position_encoding_and_frame_conv():
    pos = position_encoding(8, 4, 4, 32)
    assert pos.shape == (128, 32) and torch.unique(pos, dim=0).shape[0] == 128  # every token differs
    assert position_encoding(3, 2, 5, 7).shape == (30, 7)  # odd widths too
    conv = FrameConv3d(2, 3)
    for frames in (1, 2, 5, 20):  # 20: more than max_banded_frames, the plain 3D convolution
        x = torch.randn(2, 2, frames, 6, 7)
        assert torch.allclose(conv(x), F.conv3d(x, conv.weight, conv.bias, padding=1), atol=1e-5)


def moving_squares(n: int = 4, frames: int = 8, size: int = 32, side: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` clips of one bright square moving over a noisy dark background, and its masks (n, T, H, W)."""
    g = torch.Generator().manual_seed(0)
    videos = 0.2 * torch.rand(n, 3, frames, size, size, generator=g)
    masks = torch.zeros(n, frames, size, size)
    for i in range(n):
        y0, x0 = torch.randint(0, size - side - 8, (2,), generator=g).tolist()
        dy, dx = (1, 0) if i % 2 else (0, 1)
        colour = 0.6 + 0.4 * torch.rand(3, 1, 1, generator=g)
        for t in range(frames):
            y, x = y0 + dy * t, x0 + dx * t
            masks[i, t, y:y + side, x:x + side] = 1
            videos[i, :, t, y:y + side, x:x + side] = colour
    return videos, masks


def test_the_model_overfits_moving_squares():
    videos, masks = moving_squares()
    labels = torch.tensor([0, 1, 2, 3])
    model = create("vistr_r50", NUM_CLASSES, seed=0, **QUICK)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    targets = torch.full((4, 6), NUM_CLASSES)  # query 0 holds the square, the others "no object"
    targets[:, 0] = labels
    for _ in range(60):
        class_logits, mask_logits = model.forward_parts(videos)
        loss = (F.cross_entropy(class_logits.flatten(0, 1), targets.flatten())
                + F.binary_cross_entropy_with_logits(mask_logits[:, 0], masks))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        class_logits, mask_logits = unpack_outputs(model(videos), 8, 32, 32)
    predicted = mask_logits[:, 0] > 0
    iou = (predicted & (masks > 0)).sum() / (predicted | (masks > 0)).sum()
    assert iou > 0.5, float(iou)
    assert (class_logits[:, 0].argmax(1) == labels).float().mean() >= 0.75


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.rand(2, 8, 3, 32, 32), r"\(B, 3, T, H, W\).*frames first"),
        (torch.rand(3, 8, 32, 32), r"\(B, 3, T, H, W\).*batch dimension"),
        (torch.rand(2, 3, 8, 32, 32) * 255, r"\[0, 1\]"),
    ],
)
def test_wrong_input_names_the_expected_layout(model, bad, message):
    with pytest.raises(ValueError, match=message):
        model(bad)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"backbone": "r152"}, r"unknown backbone 'r152'; choose one of 'r50', 'r101'"),
        ({"dim": 30, "heads": 4}, r"dim 30 must be divisible by heads 4"),
        ({"queries": 0}, r"queries must be a positive int"),
        ({"blocks": (1, 2)}, r"blocks must be 4 positive ints"),
    ],
)
def test_bad_arguments_say_what_is_wrong(kwargs, message):
    with pytest.raises(ValueError, match=message):
        vistr(NUM_CLASSES, **kwargs)


def test_the_registry_creates_both_models_and_checks_their_arguments():
    assert set(VIS_MODELS) == {"vistr_r50", "vistr_r101"} <= set(available())
    model = create("vistr_r101", 3, seed=0, width=4, dim=16, heads=1, encoder_layers=1, decoder_layers=3, queries=2)
    assert isinstance(model, VisTR) and model.config["backbone"] == "r101"
    assert [s.name for s in model.stages] == ["encoder1", "decoder1", "decoder2", "decoder3"]
    assert model(clips(1, 8, 16)).shape == (1, 2, 3 + 1 + 8 * 16 * 16)
    with pytest.raises(TypeError, match="encoder_layers"):
        create("vistr_r50", 3, encoder_layer=2)
