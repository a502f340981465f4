"""Packed dropout masks: the distribution of nn.Dropout(0.5) from an eighth of the random draws; the authors'
cuda-convnet dropout, scaled at test."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import nin
from nin.layers import CudaConvnetDropout, PackedDropout, dropout_layer
from nin.layers.dropout import half_mask


def test_the_mask_keeps_each_element_with_probability_one_half_independently() -> None:
    """Over 2**20 elements: the kept share within 4 standard errors of 1/2, the scale exactly 2, and no
    correlation between neighbours (a bit reused for two elements, or bits taken from a byte's top half only,
    would show here)."""
    torch.manual_seed(0)
    mask = half_mask(torch.empty(2 ** 20))
    assert set(mask.unique().tolist()) == {0.0, 2.0}
    kept = (mask > 0).double()
    assert abs(kept.mean().item() - 0.5) < 4 * 0.5 / math.sqrt(len(kept))
    for lag in (1, 7, 8, 9):  # within a byte, across bytes
        a, b = kept[:-lag] - 0.5, kept[lag:] - 0.5
        assert abs((a * b).mean().item() / 0.25) < 4 / math.sqrt(len(a)), lag


def test_the_mask_follows_the_input_layout_and_dtype() -> None:
    x = torch.randn(4, 3, 5, 6).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    mask = half_mask(x)
    assert mask.shape == x.shape and mask.dtype == torch.bfloat16
    assert mask.is_contiguous(memory_format=torch.channels_last)
    assert (x * mask).is_contiguous(memory_format=torch.channels_last)


def test_packed_dropout_trains_like_dropout_and_is_the_identity_in_eval_mode() -> None:
    torch.manual_seed(1)
    layer = PackedDropout()
    x = torch.randn(64, 8, requires_grad=True)
    y = layer(x)
    kept = y != 0
    assert torch.equal(y[kept], 2 * x[kept])
    y.sum().backward()
    assert torch.equal(x.grad, kept.float() * 2)  # the gradient passes where the element was kept, scaled alike
    assert torch.equal(layer.eval()(x), x)


def test_networks_take_packed_dropout_on_request_only() -> None:
    assert isinstance(dropout_layer(0.5, packed=True), PackedDropout)
    assert type(dropout_layer(0.3, packed=True)) is nn.Dropout  # bits give 1/2 only
    plain = nin.create_model("nin_cifar10")
    packed = nin.create_model("nin_cifar10", packed_dropout=True)
    assert not any(isinstance(m, PackedDropout) for m in plain.modules())
    assert sum(isinstance(m, PackedDropout) for m in packed.modules()) == 2
    fc = nin.create_model("nin_cifar10_fc_dropout", packed_dropout=True)
    assert isinstance(fc.head.dropout, PackedDropout)


@pytest.mark.parametrize("name", ["nin_cifar10", "nin_mnist"])
def test_packed_dropout_changes_nothing_in_eval_mode(name: str) -> None:
    torch.manual_seed(2)
    a = nin.create_model(name, init_std="he") if name == "nin_mnist" else nin.create_model(name)
    b = nin.create_model(name, packed_dropout=True, **({"init_std": "he"} if name == "nin_mnist" else {}))
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, *nin.model_info(name).input_size)
    assert torch.equal(a.eval()(x), b.eval()(x))


@pytest.mark.parametrize("packed", [False, True])
def test_cuda_convnet_dropout_keeps_units_unscaled_in_training_and_scales_them_at_test(packed: bool) -> None:
    """The authors' DropoutNeuron: a kept unit passes as it is, a dropped one is 0; at test every unit times 1 - p.
    Catches the scale put in the wrong mode (PyTorch's convention) or a packed mask (0 or 2) passed on unhalved."""
    torch.manual_seed(3)
    layer = dropout_layer(0.5, packed=packed, cuda_convnet=True)
    assert isinstance(layer, CudaConvnetDropout)
    x = (torch.rand(2 ** 16) + 1).requires_grad_()  # no zeros: a zero output means dropped
    y = layer(x)
    kept = y != 0
    assert torch.equal(y[kept], x[kept]) and abs(kept.float().mean().item() - 0.5) < 0.01
    y.sum().backward()
    assert torch.equal(x.grad, kept.float())
    assert torch.equal(layer.eval()(x), x * 0.5)
    assert dropout_layer(0.2, cuda_convnet=True).eval()(torch.ones(4)).tolist() == pytest.approx([0.8] * 4)


@pytest.mark.parametrize("name, after_dropout", [("nin_mnist", ("features.3.layers.0", "features.6.layers.0")),
                                                 ("nin_cifar10_fc_dropout", ("features.3.layers.0",
                                                                             "features.6.layers.0", "head.fc"))])
def test_cuda_convnet_dropout_is_pytorch_dropout_with_the_next_layer_at_half_the_weights(
        name: str, after_dropout: tuple[str, ...]) -> None:
    """What the class docstring claims, against PyTorch's dropout as the reference: the same outputs (with the same
    masks in training) when each layer right after a dropout has half the weights, and there the gradient of
    the weights is half as large (so, at half the weights, a quarter of the rate). Catches a scale of 1/(1 - p)
    instead of 1 - p, or dropout layers (the fully connected head's too) that do not take the flag."""
    torch.manual_seed(4)
    authors = nin.create_model(name, cuda_convnet_dropout=True)
    assert sum(isinstance(m, CudaConvnetDropout) for m in authors.modules()) == len(after_dropout)
    pytorch = nin.create_model(name)
    pytorch.load_state_dict(authors.state_dict())
    with torch.no_grad():
        for layer in after_dropout:
            pytorch.get_submodule(layer).weight.mul_(0.5)
    x = torch.randn(4, *nin.model_info(name).input_size)
    torch.testing.assert_close(authors.eval()(x), pytorch.eval()(x))
    outputs = []
    for model in (authors.train(), pytorch.train()):
        torch.manual_seed(5)  # the same dropout masks
        outputs.append(model(x))
        outputs[-1].square().sum().backward()
    torch.testing.assert_close(outputs[0], outputs[1])
    for layer in after_dropout:
        ours, theirs = pytorch.get_submodule(layer), authors.get_submodule(layer)
        torch.testing.assert_close(theirs.weight.grad, 0.5 * ours.weight.grad)
        torch.testing.assert_close(theirs.bias.grad, ours.bias.grad)
