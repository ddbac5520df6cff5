"""stdyn.models.vos and stdyn.models.fusion: the two-stream AVOS models, their fusion layers and losses."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stdyn.core.probe import Probe
from stdyn.models.fusion import ConcatFusion, ConvexGatedFusion, GatedFusion, SumFusion, make_fusion
from stdyn.models.vos import (
    VOS_MODELS,
    TwoStreamVOS,
    boundary_loss,
    boundary_targets,
    build,
    dice_loss,
    mask_loss,
    stage_channels,
    vos_loss,
)

torch.set_num_threads(1)


def inputs(batch: int = 2, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=g), torch.rand(batch, 3, size, size, generator=g)


def randomize(module: nn.Module, seed: int = 0, std: float = 0.7) -> nn.Module:
    """Parameters far from their initial values, so that attention weights are not all ~0.5."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return module


def stage_outputs(model: nn.Module, *args) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    modules = dict(model.named_modules())
    outputs: dict[str, torch.Tensor] = {}
    handles = [modules[s.name].register_forward_hook(lambda m, i, o, name=s.name: outputs.__setitem__(name, o))
               for s in model.stages]
    try:
        logits = model(*args)
    finally:
        for handle in handles:
            handle.remove()
    return logits, outputs


# --- fusion layers -----------------------------------------------------------------------------


def test_ccg_channel_weights_of_the_two_streams_sum_to_one_per_channel_and_pixel():
    fusion = randomize(ConvexGatedFusion(8))
    alpha, beta = 2.0, -3.0
    ua, um = torch.full((2, 8, 5, 6), alpha), torch.full((2, 8, 5, 6), beta)  # constant fields
    za, zm, a_c = fusion.channel_step(ua, um)
    w_a, w_m = za / alpha, zm / beta  # read off the weight of each stream
    assert torch.allclose(w_a + w_m, torch.ones_like(w_a), atol=1e-6)
    assert torch.allclose(w_a, a_c.expand_as(w_a), atol=1e-6)
    assert w_a.std() > 0.1  # the weights differ between channels: the check is not 0.5 + 0.5


def test_ccg_spatial_step_is_one_convex_combination_per_pixel():
    fusion = randomize(ConvexGatedFusion(8), seed=1)
    g = torch.Generator().manual_seed(0)
    # Z_a and Z_m: constant over pixels, different per channel, Z_a > Z_m everywhere.
    za = (torch.rand(2, 8, 1, 1, generator=g) + 1.0).expand(2, 8, 5, 6)
    zm = (-torch.rand(2, 8, 1, 1, generator=g)).expand(2, 8, 5, 6)
    z, a_sp = fusion.spatial_step(za, zm)
    w = (z - zm) / (za - zm)  # the weight of Z_a, read off per channel and pixel
    assert torch.allclose(w, w[:, :1].expand_as(w), atol=1e-5)  # one weight per pixel, shared by channels
    assert torch.allclose(w, a_sp.expand_as(w), atol=1e-5)
    assert w.min() >= 0 and w.max() <= 1 and a_sp.std() > 0.01
    # Weights summing to one: the combination of a field with itself is that field.
    v = torch.randn(2, 8, 5, 6, generator=g)
    assert torch.allclose(fusion.spatial_step(v, v)[0], v, atol=1e-6)


def test_ccg_forward_is_the_two_steps_and_keeps_its_attention():
    fusion = randomize(ConvexGatedFusion(4), seed=2)
    g = torch.Generator().manual_seed(0)
    ua, um = torch.randn(2, 4, 6, 6, generator=g), torch.randn(2, 4, 6, 6, generator=g)
    z = fusion(ua, um)
    a_c, a_sp = fusion.last_attention["channel"], fusion.last_attention["spatial"]
    assert z.shape == ua.shape and a_c.shape == (2, 4, 1, 1) and a_sp.shape == (2, 1, 6, 6)
    assert torch.allclose(z, a_sp * a_c * ua + (1 - a_sp) * (1 - a_c) * um, atol=1e-6)


def test_gated_fusion_weights_are_not_tied_to_sum_to_one():
    fusion = randomize(GatedFusion(8), seed=3)
    alpha, beta = 2.0, -3.0
    ua, um = torch.full((2, 8, 5, 6), alpha), torch.full((2, 8, 5, 6), beta)
    z, a_c = fusion.channel_step(ua, um)
    assert z.shape == (2, 16, 5, 6) and a_c.shape == (2, 16, 1, 1)  # A_c over 2c channels
    w_a, w_m = z[:, :8] / alpha, z[:, 8:] / beta
    assert (w_a + w_m - 1).abs().max() > 0.2  # appearance channel i and motion channel i do not pair up to 1
    out, a_sp = fusion.spatial_step(z)
    gain = out / z  # 1 + A_sp per pixel: in [1, 2], not a convex combination
    assert torch.allclose(gain, (1 + a_sp).expand_as(gain), atol=1e-5)
    assert gain.min() >= 1 and gain.max() > 1.05
    fused = fusion(ua, um)
    assert fused.shape == (2, 8, 5, 6) and set(fusion.last_attention) == {"channel", "spatial"}


def test_plain_fusions_and_factory():
    ua, um = torch.rand(2, 4, 3, 3), torch.rand(2, 4, 3, 3)
    assert torch.equal(SumFusion(4)(ua, um), ua + um)
    assert ConcatFusion(4)(ua, um).shape == (2, 4, 3, 3)
    assert isinstance(make_fusion("CCG", 4), ConvexGatedFusion) and isinstance(make_fusion("G", 4), GatedFusion)
    with pytest.raises(ValueError, match="unknown fusion"):
        make_fusion("X", 4)
    with pytest.raises(ValueError, match="shaped"):
        GatedFusion(4)(ua, um[:, :3])


# --- models ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(VOS_MODELS))
def test_every_named_configuration_trains_one_step(name):
    torch.manual_seed(0)
    model = VOS_MODELS[name]()
    rgb, flow = inputs()
    masks = (torch.rand(2, 1, 32, 32) > 0.7).float()
    logits = model(rgb, flow)
    assert logits.shape == (2, 1, 32, 32)
    boundary = model.last_boundary_logits
    assert (boundary is not None) == (name == "matnet")
    if boundary is not None:
        assert boundary.shape == (2, 1, 32, 32)
    vos_loss(logits, masks, boundary, dice_weight=0.5).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad}"
    assert 200_000 < sum(p.numel() for p in model.parameters()) < 1_200_000


def test_stage_names_resolve_with_hooks_and_have_the_documented_shapes():
    model = TwoStreamVOS(width=8, cross="U", fusion="G").eval()
    channels = stage_channels(8)
    assert channels == (8, 8, 16, 32, 64)
    names = [s.name for s in model.stages]
    assert names[:3] == ["appearance1", "motion1", "fusion1"] and "fusion5" in names and len(names) == 15
    rgb, flow = inputs()
    _, outputs = stage_outputs(model, rgb, flow)
    for stage in model.stages:
        k = int(stage.name[-1])
        assert stage.kind == stage.name[:-1]
        assert stage.channels == channels[k - 1]
        assert outputs[stage.name].shape == (2, channels[k - 1], 32 // 2 ** (k - 1), 32 // 2 ** (k - 1))
    # The probe measures them from the pair builder's list input.
    with Probe(model, names) as probe:
        pooled = probe([rgb, flow])
    assert all(pooled[s.name].shape == (2, s.channels) for s in model.stages)


def test_named_configurations_have_their_stages():
    def kinds(name):
        return [(s.name, s.kind) for s in VOS_MODELS[name](width=4).stages]

    assert [n for n, k in kinds("fusionseg") if k == "fusion"] == ["fusion2", "fusion5"]
    assert {k for _, k in kinds("appearance_only")} == {"appearance"}
    assert [n for n, _ in kinds("motion_only")] == [f"motion{k}" for k in range(1, 6)]
    model = VOS_MODELS["rtnet"](width=4)
    assert isinstance(model.fusion5, ConvexGatedFusion) and model.cross2.bidirectional
    assert isinstance(VOS_MODELS["rtnet_star"](width=4).fusion3, GatedFusion)
    assert not VOS_MODELS["matnet_star"](width=4).cross1.bidirectional
    assert VOS_MODELS["matnet"](width=4).decoder.boundary is not None
    shallow = TwoStreamVOS(width=4, fusion_stages=(1, 3))
    assert not hasattr(shallow, "appearance_stage4") and shallow(*inputs(size=16)).shape == (2, 1, 16, 16)


def _depends(model: nn.Module, stage: str, on: str) -> bool:
    rgb, flow = inputs()
    rgb.requires_grad_(True)
    flow.requires_grad_(True)
    captured = {}
    handle = dict(model.named_modules())[stage].register_forward_hook(
        lambda m, i, o: captured.__setitem__("out", o))
    try:
        model(rgb, flow)
    finally:
        handle.remove()
    grad = torch.autograd.grad(captured["out"].sum(), rgb if on == "rgb" else flow, allow_unused=True)[0]
    return grad is not None and bool(grad.abs().sum() > 0)


@pytest.mark.parametrize("cross, appearance_sees_flow, motion_sees_rgb",
                         [("none", False, False), ("U", True, False), ("B", True, True)])
def test_cross_connections_wire_the_streams(cross, appearance_sees_flow, motion_sees_rgb):
    torch.manual_seed(0)
    model = TwoStreamVOS(width=4, cross=cross).eval()
    for k in (1, 3, 5):
        assert _depends(model, f"appearance{k}", "rgb") and _depends(model, f"motion{k}", "flow")
        assert _depends(model, f"appearance{k}", "flow") == appearance_sees_flow
        assert _depends(model, f"motion{k}", "rgb") == motion_sees_rgb
    assert _depends(model, "fusion2", "rgb") and _depends(model, "fusion2", "flow")


def test_single_stream_baselines_ignore_the_other_input():
    torch.manual_seed(0)
    for name, unused in (("appearance_only", 1), ("motion_only", 0)):
        model = VOS_MODELS[name](width=4).eval()
        x = list(inputs())
        x[unused].requires_grad_(True)
        grad = torch.autograd.grad(model(*x).sum(), x[unused], allow_unused=True)[0]
        assert grad is None or not grad.any()


def test_forward_forms_and_input_checks():
    model = build("matnet", seed=0, width=4).eval()
    rgb, flow = inputs()
    logits, boundary = model(rgb, flow, return_boundary=True)
    assert torch.equal(model([rgb, flow]), logits) and boundary.shape == logits.shape
    assert torch.equal(build("matnet", seed=0, width=4).eval()(rgb, flow), logits)  # seeded
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model(rgb * 255, flow)
    with pytest.raises(ValueError, match="B, 3, H, W"):
        model(rgb[:, :2], flow)
    with pytest.raises(ValueError, match=r"flow images: .*\(B, 3, H, W\).*batch dimension"):
        model(rgb, flow[0])
    with pytest.raises(ValueError, match="cross"):
        TwoStreamVOS(cross="X")
    with pytest.raises(ValueError, match="single-stream"):
        TwoStreamVOS(streams=("motion",), cross="U")
    with pytest.raises(ValueError, match="fusion_stages"):
        TwoStreamVOS(fusion_stages=(0, 6))
    with pytest.raises(ValueError, match="Did you mean"):
        build("matnet_bar")
    assert isinstance(model, TwoStreamVOS) and model.config["boundary"] is True
    model.train()
    model(rgb, flow)  # boundary logits attached to the graph do not stop a copy
    assert copy.deepcopy(model).last_boundary_logits is None and model.last_boundary_logits is not None


# --- losses and schedule -----------------------------------------------------------------------


def test_boundary_targets_and_loss_by_hand():
    mask = torch.zeros(1, 1, 5, 5)
    mask[..., 1:4, 1:4] = 1
    expected = torch.ones(5, 5)
    expected[2, 2] = 0  # dilation (all 5x5) minus erosion (the centre)
    assert torch.equal(boundary_targets(mask)[0, 0], expected)
    assert not boundary_targets(torch.ones(1, 4, 4)).any()  # the image border is no boundary
    # Class balance: 24 boundary pixels (beta = 1/25), 1 other (weight 24/25); logits 0 -> bce = log 2.
    loss = boundary_loss(torch.zeros(1, 1, 5, 5), mask)
    expected_loss = (24 * (1 / 25) + 1 * (24 / 25)) * torch.log(torch.tensor(2.0)) / 25
    assert loss.item() == pytest.approx(expected_loss.item(), rel=1e-6)


def test_mask_losses_by_hand():
    logits = torch.tensor([[[[2.0, -1.0], [0.0, 3.0]]]])
    masks = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])  # (B, H, W) accepted
    bce = F.binary_cross_entropy_with_logits(logits, masks.unsqueeze(1))
    assert mask_loss(logits, masks).item() == pytest.approx(bce.item())
    p = torch.sigmoid(logits).flatten()
    dice = 1 - (2 * (p[0] + p[2]) + 1) / (p.sum() + 2 + 1)
    assert dice_loss(logits, masks).item() == pytest.approx(dice.item(), rel=1e-6)
    assert mask_loss(logits, masks, dice_weight=2).item() == pytest.approx((bce + 2 * dice).item(), rel=1e-6)
    assert vos_loss(logits, masks).item() == pytest.approx(bce.item())
