"""The conventional CNN of the paper's Section 4.6 (the dropout paper's CIFAR-10 network)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import nin
from nin.layers import LocallyConnected2d, SpatialResponseNorm
from nin.models import profile_model
from nin.models.baselines import ConventionalCNN

NAMES = ["cnn_cifar10_fc", "cnn_cifar10_fc_dropout", "cnn_cifar10_gap"]

# Parameters, from the architecture in docs/conventional-cnn.md (weights + biases):
CONV1 = 5 * 5 * 3 * 64 + 64  # 4,864
CONV2 = 5 * 5 * 64 * 64 + 64  # 102,464
CONV3 = 5 * 5 * 64 * 64 + 64  # 102,464
TRUNK = CONV1 + CONV2 + CONV3  # 209,792
# locally connected 3×3, pad 1, on 4×4×64: one 3·3·64 filter and one bias per position and map
LOCAL16 = 4 * 4 * 16 * (3 * 3 * 64) + 4 * 4 * 16  # 147,456 + 256 = 147,712
LOCAL10 = 4 * 4 * 10 * (3 * 3 * 64) + 4 * 4 * 10  # 92,160 + 160 = 92,320
FC = 16 * 4 * 4 * 10 + 10  # 2,570
EXPECTED_PARAMS = {
    "cnn_cifar10_fc": TRUNK + LOCAL16 + FC,  # 360,074
    "cnn_cifar10_fc_dropout": TRUNK + LOCAL16 + FC,  # 360,074 (dropout has no parameters)
    "cnn_cifar10_gap": TRUNK + LOCAL10,  # 302,112 (GAP has no parameters)
}

# Multiply-adds per 32×32 image: output units × fan-in.
MACS_TRUNK = 32 * 32 * 64 * (5 * 5 * 3) + 16 * 16 * 64 * (5 * 5 * 64) + 8 * 8 * 64 * (5 * 5 * 64)
EXPECTED_MACS = {
    "cnn_cifar10_fc": MACS_TRUNK + 4 * 4 * 16 * (3 * 3 * 64) + 10 * 256,  # 37,833,216
    "cnn_cifar10_fc_dropout": MACS_TRUNK + 4 * 4 * 16 * (3 * 3 * 64) + 10 * 256,
    "cnn_cifar10_gap": MACS_TRUNK + 4 * 4 * 10 * (3 * 3 * 64),  # 37,775,360
}


@pytest.mark.parametrize("name", NAMES)
def test_registered_for_cifar10(name):
    info = nin.model_info(name)
    assert info.input_size == (3, 32, 32) and info.num_classes == 10
    assert "Section 4.6" in info.paper


@pytest.mark.parametrize("name", NAMES)
def test_shapes(name):
    model = nin.create_model(name).eval()
    x = torch.randn(2, 3, 32, 32)
    assert model(x).shape == (2, 10)
    assert model.forward_features(x).shape == (2, 16 if "fc" in name else 10, 4, 4)
    assert model.class_maps(x).shape == (2, 10, 4, 4)


@pytest.mark.parametrize("name", NAMES)
def test_parameter_counts(name):
    assert sum(p.numel() for p in nin.create_model(name).parameters()) == EXPECTED_PARAMS[name]


@pytest.mark.parametrize("name", NAMES)
def test_profile(name):
    profile = profile_model(nin.create_model(name), (3, 32, 32))
    assert profile.parameters == EXPECTED_PARAMS[name]
    assert profile.multiply_adds == EXPECTED_MACS[name]
    assert profile.feature_sizes == ((16, 16), (8, 8), (4, 4))  # 32→16→8→4, sizes rounded up


@pytest.mark.parametrize("name", NAMES)
def test_logits_are_mean_of_class_maps(name):
    torch.manual_seed(0)
    model = nin.create_model(name).double().eval()
    with torch.no_grad():  # weights larger than the tiny init stds, so the check is not 0 ≈ 0
        for p in model.parameters():
            p.normal_(std=0.1)
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    logits = model(x)
    assert logits.abs().max() > 1e-3
    torch.testing.assert_close(logits, model.class_maps(x).mean(dim=(2, 3)), rtol=1e-10, atol=1e-10)


def test_gap_variant_cuts_local_layer_to_ten_maps():
    gap, fc = nin.create_model("cnn_cifar10_gap"), nin.create_model("cnn_cifar10_fc")
    assert isinstance(gap.features.local4, LocallyConnected2d)
    assert gap.features.local4.out_channels == 10
    assert fc.features.local4.out_channels == 16
    assert not any(True for _ in gap.head.parameters())  # no classifier weights: GAP only
    assert gap.last_feature_layer() is gap.features.local4


def test_gap_needs_one_map_per_class():
    with pytest.raises(ValueError, match="one map per class"):
        ConventionalCNN(head="gap", local_maps=16)


def test_layer_order_and_pooling():
    f = nin.create_model("cnn_cifar10_fc").features
    kinds = [type(m).__name__ for m in f]
    assert kinds == [
        "Conv2d", "ReLU", "MaxPool2d", "LocalResponseNorm",
        "Conv2d", "ReLU", "AvgPool2d", "LocalResponseNorm",
        "Conv2d", "ReLU", "AvgPool2d",
        "LocallyConnected2d", "ReLU",
    ]
    assert all(m.kernel_size == (5, 5) and m.padding == (2, 2) and m.out_channels == 64
               for m in f if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("name,std", [("features.conv1.weight", 1e-4), ("features.conv2.weight", 1e-2),
                                      ("features.conv3.weight", 1e-2), ("features.local4.weight", 0.04),
                                      ("head.fc.weight", 0.01)])
def test_init_stds(name, std):
    torch.manual_seed(0)
    params = dict(nin.create_model("cnn_cifar10_fc").named_parameters())
    assert params[name].std().item() == pytest.approx(std, rel=0.1)
    assert params[name.replace("weight", "bias")].abs().max() == 0


def test_rnorm_is_cuda_convnet_cross_map_normalization():
    """x · (1 + α/N · Σ x²)^(−β), the sum over maps f − ⌊N/2⌋ … f − ⌊N/2⌋ + N − 1 clipped to the layer."""
    rnorm = nin.create_model("cnn_cifar10_fc").features.rnorm1
    n, alpha, beta = 9, 1e-3, 0.75
    x = torch.randn(2, 20, 3, 3, dtype=torch.float64) * 10
    expected = torch.empty_like(x)
    for f in range(20):
        lo, hi = max(0, f - n // 2), min(20, f - n // 2 + n)
        expected[:, f] = x[:, f] * (1 + alpha / n * x[:, lo:hi].square().sum(1)) ** -beta
    torch.testing.assert_close(rnorm(x), expected, rtol=1e-12, atol=1e-12)


def spatial_rnorm_loops(x: torch.Tensor, size: int, alpha: float, beta: float) -> torch.Tensor:
    """cuda-convnet's ``kCNorm_fewfilter`` written out: the window of each pixel starts size // 2 above and left of it,
    is clipped to the map, and ``layer.py`` divides the config's scale by size²."""
    height, width = x.shape[-2:]
    out = torch.empty_like(x)
    for py in range(height):
        for px in range(width):
            y0, x0 = py - size // 2, px - size // 2
            window = x[..., max(0, y0):min(height, y0 + size), max(0, x0):min(width, x0 + size)]
            energy = window.square().sum(dim=(-2, -1))
            out[..., py, px] = x[..., py, px] * (1 + alpha / size**2 * energy) ** -beta
    return out


@pytest.mark.parametrize("size,height,width", [(9, 8, 8), (9, 16, 16), (3, 5, 7), (4, 6, 5), (1, 3, 3)])
def test_spatial_response_norm_matches_cuda_convnet_rnorm(size, height, width):
    x = torch.randn(2, 3, height, width, dtype=torch.float64) * 10
    layer = SpatialResponseNorm(size, alpha=1e-3, beta=0.75)
    torch.testing.assert_close(layer(x), spatial_rnorm_loops(x, size, 1e-3, 0.75), rtol=1e-12, atol=1e-12)


def test_response_norm_option_swaps_both_normalizations_and_nothing_else():
    cross, spatial = (nin.create_model("cnn_cifar10_fc", response_norm=kind) for kind in ("cross-map", "spatial"))
    assert [type(m).__name__ for m in spatial.features] == [
        "SpatialResponseNorm" if isinstance(m, nn.LocalResponseNorm) else type(m).__name__ for m in cross.features]
    spatial.load_state_dict(cross.state_dict())  # same parameters, so recipes and checkpoints carry over
    x = torch.randn(2, 64, 8, 8, dtype=torch.float64) * 10
    torch.testing.assert_close(spatial.features.rnorm2(x), spatial_rnorm_loops(x, 9, 1e-3, 0.75))


def test_unknown_response_norm_is_named():
    with pytest.raises(ValueError, match="unknown response_norm 'spacial'; use 'cross-map' or 'spatial'"):
        ConventionalCNN(response_norm="spacial")


def test_dropout_only_in_fc_dropout_variant_and_only_in_training():
    x = torch.randn(4, 3, 32, 32)
    model = nin.create_model("cnn_cifar10_fc_dropout")
    assert isinstance(model.head.dropout, nn.Dropout) and model.head.dropout.p == 0.5
    with torch.no_grad():
        model.eval()
        torch.testing.assert_close(model(x), model(x))
        model.train()
        torch.manual_seed(0)
        first = model(x)
        torch.manual_seed(1)
        assert not torch.allclose(first, model(x))
    for name in ("cnn_cifar10_fc", "cnn_cifar10_gap"):
        plain = nin.create_model(name).train()
        assert not any(isinstance(m, nn.Dropout) for m in plain.modules())
        with torch.no_grad():
            torch.testing.assert_close(plain(x), plain(x))


def test_biases_learn_twice_as_fast():
    multipliers = nin.create_model("cnn_cifar10_gap").lr_multipliers()
    assert multipliers["features.local4.bias"] == 2.0 and multipliers["features.local4.weight"] == 1.0
    assert all(m == (2.0 if name.endswith("bias") else 1.0) for name, m in multipliers.items())


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_layer_from_the_authors_init(name):
    torch.manual_seed(0)
    model = nin.create_model(name).train()
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    nn.functional.cross_entropy(model(x), y).backward()
    for param_name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().max() > 0, param_name
