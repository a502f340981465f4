"""The d2l.ai peer network against the book's own definition, written out here as the book does."""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

import nin


def _book_block(cin: int, cout: int, kernel: int, stride: int, padding: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding), nn.ReLU(),
                         nn.Conv2d(cout, cout, 1), nn.ReLU(), nn.Conv2d(cout, cout, 1), nn.ReLU())


def _book_network() -> nn.Sequential:
    """The book's NiN (chapter "Network in Network"), which takes images already resized to 224."""
    return nn.Sequential(
        _book_block(1, 96, 11, 4, 0), nn.MaxPool2d(3, stride=2),
        _book_block(96, 256, 5, 1, 2), nn.MaxPool2d(3, stride=2),
        _book_block(256, 384, 3, 1, 1), nn.MaxPool2d(3, stride=2),
        nn.Dropout(0.5),
        _book_block(384, 10, 3, 1, 1),
        nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten())


def test_matches_the_book_network_on_resized_images() -> None:
    torch.manual_seed(0)
    ours = nin.create_model("d2l_nin").eval()
    book = _book_network().eval()
    ours_params = list(ours.parameters())
    book_params = list(book.parameters())
    assert [p.shape for p in ours_params] == [p.shape for p in book_params]
    assert sum(p.numel() for p in ours_params) == sum(p.numel() for p in book_params)
    with torch.no_grad():
        for mine, theirs in zip(ours_params, book_params):
            theirs.copy_(mine)
        x = torch.rand(3, 1, 28, 28)
        resized = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
        torch.testing.assert_close(ours(x), book(resized), rtol=1e-4, atol=1e-5)
        assert ours.class_maps(x).shape == (3, 10, 5, 5)  # pooling rounds down: 54→26→12→5


def test_weights_are_glorot_uniform_and_biases_are_left_alone() -> None:
    torch.manual_seed(0)
    model = nin.create_model("d2l_nin")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 12
    for conv in convs:
        fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
        fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
        bound = math.sqrt(6 / (fan_in + fan_out))
        assert conv.weight.abs().max() <= bound
        assert conv.weight.abs().max() > 0.9 * bound  # drawn up to the bound, not a narrower rule
        assert conv.bias.abs().max() > 0  # PyTorch's default bias, as in the book (not zeroed)
