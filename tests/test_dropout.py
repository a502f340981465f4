"""Packed dropout masks: the distribution of nn.Dropout(0.5) from an eighth of the random draws."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import nin
from nin.layers import PackedDropout, dropout_layer
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
