"""LocallyConnected2d against an explicit per-position reference, conv2d, and autograd."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nin.layers import LocallyConnected2d
from nin.models import profile_model


def reference_local(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                    stride: tuple[int, int], padding: tuple[int, int]) -> torch.Tensor:
    """One dot product per output position with that position's own filters: no unfold, no einsum."""
    out_h, out_w, out_c, _, kh, kw = weight.shape
    xp = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
    out = torch.zeros(x.shape[0], out_c, out_h, out_w, dtype=x.dtype)
    for i in range(out_h):
        for j in range(out_w):
            r, c = i * stride[0], j * stride[1]
            patch = xp[:, :, r:r + kh, c:c + kw]
            out[:, :, i, j] = (patch.unsqueeze(1) * weight[i, j].unsqueeze(0)).sum(dim=(2, 3, 4))
            if bias is not None:
                out[:, :, i, j] += bias.view(out_c, out_h, out_w)[:, i, j]
    return out


CASES = [
    # in, out, input size, kernel, stride, padding
    (3, 5, (6, 6), 3, 1, 0),
    (3, 5, (6, 6), 3, 1, 1),
    (4, 2, (7, 5), (3, 2), (2, 1), (1, 0)),
    (2, 3, (8, 8), 5, 2, 2),
    (64, 16, (4, 4), 3, 1, 1),  # the conventional CNN's local layer
    (1, 1, (3, 3), 3, 1, 0),  # a single output position: a fully connected layer
]


@pytest.mark.parametrize("in_c,out_c,size,kernel,stride,padding", CASES)
def test_matches_per_position_reference(in_c, out_c, size, kernel, stride, padding):
    torch.manual_seed(0)
    layer = LocallyConnected2d(in_c, out_c, size, kernel, stride, padding).double()
    x = torch.randn(3, in_c, *size, dtype=torch.float64)
    expected = reference_local(x, layer.weight, layer.bias, layer.stride, layer.padding)
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("in_c,out_c,size,kernel,stride,padding", CASES)
def test_shared_weights_equal_conv2d(in_c, out_c, size, kernel, stride, padding):
    torch.manual_seed(1)
    layer = LocallyConnected2d(in_c, out_c, size, kernel, stride, padding, bias=False).double()
    shared = torch.randn(out_c, in_c, *layer.kernel_size, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(shared.expand_as(layer.weight))
    x = torch.randn(2, in_c, *size, dtype=torch.float64)
    expected = F.conv2d(x, shared, stride=layer.stride, padding=layer.padding)
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)


def test_output_size_follows_conv_arithmetic():
    layer = LocallyConnected2d(2, 3, (7, 5), (3, 2), stride=(2, 1), padding=(1, 0))
    assert layer.output_size == ((7 + 2 - 3) // 2 + 1, (5 - 2) // 1 + 1) == (4, 4)
    assert layer(torch.zeros(1, 2, 7, 5)).shape == (1, 3, 4, 4)


def test_positions_are_independent():
    """Changing one position's filters changes that output position only."""
    torch.manual_seed(2)
    layer = LocallyConnected2d(3, 4, (5, 5), 3, padding=1)
    x = torch.randn(2, 3, 5, 5)
    before = layer(x).detach()
    with torch.no_grad():
        layer.weight[2, 3].add_(1.0)
    changed = (layer(x).detach() - before).abs().amax(dim=(0, 1)) > 0
    expected = torch.zeros(5, 5, dtype=torch.bool)
    expected[2, 3] = True
    assert torch.equal(changed, expected)


def test_gradcheck():
    torch.manual_seed(3)
    layer = LocallyConnected2d(2, 3, (4, 3), 2, stride=1, padding=1).double()
    x = torch.randn(2, 2, 4, 3, dtype=torch.float64, requires_grad=True)
    params = (layer.weight, layer.bias)

    def f(inp, weight, bias):
        return torch.func.functional_call(layer, {"weight": weight, "bias": bias}, (inp,))

    assert torch.autograd.gradcheck(f, (x, *params))


def test_gradients_reach_every_parameter():
    layer = LocallyConnected2d(3, 4, (5, 5), 3, padding=1)
    layer(torch.randn(2, 3, 5, 5)).square().sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().amax(dim=(2, 3, 4, 5)).gt(0).all()
    assert layer.bias.grad is not None and layer.bias.grad.ne(0).all()


@pytest.mark.parametrize("bias", [True, False])
def test_parameter_count(bias):
    in_c, out_c, (kh, kw) = 5, 7, (3, 2)
    out_h, out_w = (6 + 2 - 3) // 1 + 1, (9 - 2) // 2 + 1  # 6, 4
    layer = LocallyConnected2d(in_c, out_c, (6, 9), (kh, kw), stride=(1, 2), padding=(1, 0), bias=bias)
    weights = out_h * out_w * out_c * in_c * kh * kw  # one filter bank per position
    biases = out_h * out_w * out_c if bias else 0  # one bias per position and channel (cuda-convnet)
    assert sum(p.numel() for p in layer.parameters()) == weights + biases


def test_bias_is_one_dimensional():
    """Flat biases: optimizers that skip weight decay on 1-D parameters skip them, as cuda-convnet does."""
    assert LocallyConnected2d(3, 4, 5, 3).bias.ndim == 1


def test_multiply_adds():
    layer = LocallyConnected2d(64, 16, (4, 4), 3, padding=1)
    # 4·4 positions · 16 maps, each a dot product over 64·3·3 inputs
    assert layer.multiply_adds(torch.zeros(1, 64, 4, 4), torch.zeros(1, 16, 4, 4)) == 4 * 4 * 16 * 64 * 9
    assert profile_model(layer, (64, 4, 4)).multiply_adds == 4 * 4 * 16 * 64 * 9


def test_rejects_other_input_sizes():
    layer = LocallyConnected2d(3, 4, (5, 5), 3)
    with pytest.raises(ValueError, match=r"\(5, 5\)"):
        layer(torch.zeros(1, 3, 6, 6))


def test_rejects_kernel_larger_than_input():
    with pytest.raises(ValueError):
        LocallyConnected2d(3, 4, (2, 2), 3)
