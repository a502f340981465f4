"""Every registered network: shapes, counts, the GAP identity, dropout, determinism."""
from __future__ import annotations

import pytest
import torch
from _scripted import NAME as SCRIPTED_TEST_NET
from torch import nn

import nin
from nin.layers import MLPConv

# the networks nin registers; the scripted test double, which other test files register, has no class maps
ALL = [name for name in nin.list_models() if name != SCRIPTED_TEST_NET]
SMALL = [n for n in ALL if n != "nin_imagenet"]  # 224×224 inputs are slow for backward passes


def _input(name: str, n: int = 2) -> torch.Tensor:
    return torch.randn(n, *nin.model_info(name).input_size)


@pytest.mark.parametrize("name", ALL)
def test_forward_shapes_and_gap_identity(name: str) -> None:
    torch.manual_seed(0)
    model = nin.create_model(name).eval()
    x = _input(name)
    with torch.no_grad():
        logits = model(x)
        maps = model.class_maps(x)
    k = nin.model_info(name).num_classes
    assert logits.shape == (2, k)
    assert maps.ndim == 4 and maps.shape[:2] == (2, k)
    assert torch.isfinite(logits).all()
    # logits of an untrained network can be of order 1e-5: the tolerance scales with them, or it would pass anything
    scale = logits.abs().max().item()
    assert scale > 0
    torch.testing.assert_close(maps.mean((2, 3)), logits, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("name", SMALL)
def test_backward_reaches_every_parameter(name: str) -> None:
    torch.manual_seed(0)
    model = nin.create_model(name).train()
    loss = nn.functional.cross_entropy(model(_input(name, 4)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("name", SMALL)
def test_dropout_only_in_training(name: str) -> None:
    model = nin.create_model(name)
    x = _input(name)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    has_dropout = any(isinstance(m, nn.Dropout) for m in model.modules())
    model.train()
    with torch.no_grad():
        torch.manual_seed(1)
        a = model(x)
        torch.manual_seed(2)
        b = model(x)
    assert (not torch.equal(a, b)) == has_dropout


@pytest.mark.parametrize("name", SMALL)
def test_same_seed_same_model(name: str) -> None:
    torch.manual_seed(3)
    a = nin.create_model(name)
    torch.manual_seed(3)
    b = nin.create_model(name)
    for (na, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(pa, pb), na


def _paper_params(stages: list[tuple[int, list[int], int]], in_ch: int) -> int:
    """Sum of conv weights + biases, from (kernel, widths, ...) written out by hand."""
    total, c = 0, in_ch
    for k, widths, _ in stages:
        for i, w in enumerate(widths):
            kk = k * k if i == 0 else 1
            total += c * kk * w + w
            c = w
    return total


def test_nin_cifar10_counts_match_the_paper() -> None:
    prof = nin.profile_model(nin.create_model("nin_cifar10"), (3, 32, 32))
    assert prof.parameters == 966_986
    # conv multiply-adds, layer by layer: positions × (in × k × k) × out
    expected = (1024 * (3 * 25 * 192 + 192 * 160 + 160 * 96)
                + 256 * (96 * 25 * 192 + 192 * 192 * 2)
                + 64 * (192 * 9 * 192 + 192 * 192 + 192 * 10))
    assert prof.multiply_adds == expected
    assert abs(prof.multiply_adds / 1e6 - 222.97) / 222.97 < 0.005  # the "about 222.97 M"
    assert prof.feature_sizes == ((16, 16), (8, 8))


@pytest.mark.parametrize(
    "name, in_ch, stages, sizes",
    [
        ("nin_mnist", 1, [(5, [96, 64, 48], 0), (5, [128, 96, 48], 0), (5, [128, 96, 10], 0)], ((14, 14), (7, 7))),
        ("nin_svhn", 3, [(5, [128, 96, 64], 0), (5, [320, 256, 128], 0), (5, [384, 256, 10], 0)], ((16, 16), (8, 8))),
        ("nin_cifar100", 3, [(5, [192, 160, 96], 0), (5, [192, 192, 192], 0), (3, [192, 192, 100], 0)],
         ((16, 16), (8, 8))),
    ],
)
def test_widths_and_feature_sizes(name: str, in_ch: int, stages: list, sizes: tuple) -> None:
    prof = nin.profile_model(nin.create_model(name), nin.model_info(name).input_size)
    assert prof.parameters == _paper_params(stages, in_ch)
    assert prof.feature_sizes == sizes


def test_imagenet_feature_sizes() -> None:
    prof = nin.profile_model(nin.create_model("nin_imagenet"), (3, 224, 224))
    assert prof.feature_sizes == ((27, 27), (13, 13), (6, 6))


def test_caffe_variant_uses_average_pool2_and_lr_multipliers() -> None:
    model = nin.create_model("nin_cifar10_caffe")
    pools = [type(m) for m in model.features if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d))]
    assert pools == [nn.MaxPool2d, nn.AvgPool2d]
    groups = nin.param_groups(model, lr=0.1, weight_decay=1e-4)
    last = model.last_feature_layer()
    by_param = {id(p): g for g in groups for p in g["params"]}
    assert by_param[id(last.weight)]["lr"] == pytest.approx(0.01)
    assert by_param[id(last.bias)]["lr"] == pytest.approx(0.01)
    assert by_param[id(last.bias)]["weight_decay"] == 0.0
    first_conv = model.features[0].convs[0]
    assert by_param[id(first_conv.bias)]["lr"] == pytest.approx(0.2)
    assert by_param[id(first_conv.weight)]["weight_decay"] == pytest.approx(1e-4)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


AUTHORS_STDS = {  # written from the authors' files: initW of NIN/*_def (cuda-convnet 9f9e707), the zoo prototxt
    "nin_cifar10": [0.05] * 9,  # cifar-10_def
    "nin_cifar100": [0.001, 0.01, 0.01] + [0.05] * 6,  # cifar-100_def
    "nin_mnist": [0.05] * 9,  # mnist_def
    "nin_svhn": [0.05] * 9,  # svhn_def
    "nin_imagenet": [0.01, 0.05, 0.05, 0.05, 0.05, 0.05, 0.01, 0.05, 0.05, 0.05, 0.05, 0.01],  # gist d802a584...
}


@pytest.mark.parametrize("name", AUTHORS_STDS)
def test_init_follows_the_authors_stds(name: str) -> None:
    torch.manual_seed(0)
    model = nin.create_model(name)
    convs = [c for block in model.features if isinstance(block, MLPConv) for c in block.convs]
    stds = [c.weight.std().item() for c in convs]
    assert len(stds) == len(AUTHORS_STDS[name])
    for got, want in zip(stds, AUTHORS_STDS[name]):
        assert got == pytest.approx(want, rel=0.15)
    assert all(torch.count_nonzero(c.bias) == 0 for c in convs)


@pytest.mark.parametrize("name", [n for n in SMALL if n.startswith("nin_")])
def test_batch_norm_option(name: str) -> None:
    model = nin.create_model(name, batch_norm=True)  # fully connected heads included
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert all(c.bias is None for b in model.features if isinstance(b, MLPConv) for c in b.convs)
    x = _input(name)
    assert model(x).shape == (2, nin.model_info(name).num_classes)
    assert torch.allclose(model.eval().class_maps(x).mean((2, 3)), model(x), atol=1e-5)


def test_num_classes_override() -> None:
    assert nin.create_model("nin_cifar10", num_classes=7)(torch.randn(1, 3, 32, 32)).shape == (1, 7)


def test_list_models_pattern_and_unknown_name() -> None:
    assert {"nin_cifar10", "nin_cifar100", "nin_svhn", "nin_mnist", "nin_imagenet", "nin_cifar10_caffe"} <= set(ALL)
    assert nin.list_models("nin_cifar10_fc*") == ["nin_cifar10_fc", "nin_cifar10_fc_dropout"]
    with pytest.raises(KeyError, match="nin_cifar10"):
        nin.create_model("nin_cifar11")


def test_mlpconv_layer_structure() -> None:
    layer = MLPConv(3, [8, 6, 4], kernel_size=3, padding=1, last_activation=False)
    kinds = [type(m).__name__ for m in layer.layers]
    assert kinds == ["Conv2d", "ReLU", "Conv2d", "ReLU", "Conv2d"]
    assert [c.kernel_size for c in layer.convs] == [(3, 3), (1, 1), (1, 1)]
    assert layer(torch.randn(1, 3, 5, 5)).shape == (1, 4, 5, 5)
    with pytest.raises(ValueError, match="init_std has 2 entries"):
        MLPConv(3, [8, 6, 4], 3, init_std=[0.1, 0.1])
