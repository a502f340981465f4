"""The conventional CNN that the paper's Section 4.6 tops with FC, FC + dropout, or GAP.

It is the CIFAR-10 network of Hinton et al. 2012 (the dropout paper, arXiv 1207.0580): three
5×5 convolutional layers of 64 maps, each followed by 3×3 stride-2 pooling (max after the first,
average after the others), cross-map response normalization after the first two poolings, then one
locally connected 3×3 layer of 16 maps, the layer the dropout paper applies dropout to, then the
classifier. The NIN paper cuts that layer to 10 maps for its GAP variant. What comes from which
source, and what we decided, is in ``docs/conventional-cnn.md``.

Decided here, not stated by the dropout paper: padding 2 for the 5×5 convolutions and 1 for the
locally connected layer (cuda-convnet's CIFAR configs), ReLU after every hidden layer (before
pooling), pooling sizes rounded up like cuda-convnet (32→16→8→4), and the init stds of
cuda-convnet's ``layers-18pct`` / ``layers-conv-local`` configs with zero biases.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from nin.layers import LocallyConnected2d, SpatialResponseNorm
from nin.models.base import ClassMapNetwork
from nin.models.heads import FCHead, GAPHead
from nin.models.registry import register_model

# Response normalization "N = 9, α = 0.001, β = 0.75" across maps. cuda-convnet's ``cmrnorm``
# computes x · (1 + α/N · Σ x²)^(−β) over the N maps centred on x, which is exactly
# nn.LocalResponseNorm(size=N, alpha=α, beta=β, k=1): PyTorch also divides α by N.
RNORM_SIZE, RNORM_ALPHA, RNORM_BETA = 9, 1e-3, 0.75
# The other reading of the same numbers: a 9×9 window of each map (cuda-convnet's ``rnorm``, the type
# ``layers-18pct.cfg`` uses), offered to test whether the normalization type explains the CNN's miss.
RESPONSE_NORMS = {
    "cross-map": lambda: nn.LocalResponseNorm(RNORM_SIZE, RNORM_ALPHA, RNORM_BETA, k=1.0),
    "spatial": lambda: SpatialResponseNorm(RNORM_SIZE, RNORM_ALPHA, RNORM_BETA, k=1.0),
}

# Gaussian init stds of cuda-convnet's CIFAR configs (``initW``); biases start at 0.
INIT_STD = {"conv1": 1e-4, "conv2": 1e-2, "conv3": 1e-2, "local4": 0.04, "fc": 0.01}


def _gaussian(layer: nn.Module, std: float) -> nn.Module:
    nn.init.normal_(layer.weight, std=std)
    nn.init.zeros_(layer.bias)
    return layer


class ConventionalCNN(ClassMapNetwork):
    """Three conv + pool stages and one locally connected layer, then an FC or GAP classifier.

    ``head='fc'`` / ``'fc-dropout'`` put a fully connected layer (with dropout 0.5 on its input for
    the latter) on ``local_maps`` maps, 16 by default as in the dropout paper. ``head='gap'``
    averages the locally connected layer's maps, so it needs exactly ``num_classes`` of them.
    Biases learn at 2× the weights' rate, as in every cuda-convnet CIFAR config (epsB = 2·epsW).
    ``response_norm='spatial'`` normalizes over a 9×9 window of each map instead of 9 maps.
    """

    def __init__(
        self,
        head: str = "fc",
        num_classes: int = 10,
        local_maps: int | None = None,
        in_channels: int = 3,
        input_size: int = 32,
        width: int = 64,
        bias_lr_mult: float = 2.0,
        last_layer_lr_mult: float = 1.0,
        last_layer_bias_lr_mult: float | None = None,
        response_norm: str = "cross-map",
    ) -> None:
        super().__init__(bias_lr_mult, last_layer_lr_mult, last_layer_bias_lr_mult)
        if head not in ("fc", "fc-dropout", "gap"):
            raise ValueError(f"unknown head {head!r}; use 'gap', 'fc' or 'fc-dropout'")
        if response_norm not in RESPONSE_NORMS:
            raise ValueError(f"unknown response_norm {response_norm!r}; use {' or '.join(map(repr, RESPONSE_NORMS))}")
        if local_maps is None:
            local_maps = num_classes if head == "gap" else 16
        if head == "gap" and local_maps != num_classes:
            raise ValueError(f"GAP needs one map per class: local_maps={local_maps}, num_classes={num_classes}")
        self.num_classes = num_classes

        trunk = nn.Sequential(OrderedDict([
            ("conv1", _gaussian(nn.Conv2d(in_channels, width, 5, padding=2), INIT_STD["conv1"])),
            ("relu1", nn.ReLU(inplace=True)),
            ("pool1", nn.MaxPool2d(3, stride=2, ceil_mode=True)),
            ("rnorm1", RESPONSE_NORMS[response_norm]()),
            ("conv2", _gaussian(nn.Conv2d(width, width, 5, padding=2), INIT_STD["conv2"])),
            ("relu2", nn.ReLU(inplace=True)),
            ("pool2", nn.AvgPool2d(3, stride=2, ceil_mode=True)),
            ("rnorm2", RESPONSE_NORMS[response_norm]()),
            ("conv3", _gaussian(nn.Conv2d(width, width, 5, padding=2), INIT_STD["conv3"])),
            ("relu3", nn.ReLU(inplace=True)),
            ("pool3", nn.AvgPool2d(3, stride=2, ceil_mode=True)),
        ]))
        with torch.no_grad():
            pooled = tuple(trunk(torch.zeros(1, in_channels, input_size, input_size, device="meta")).shape[-2:])
        local = LocallyConnected2d(width, local_maps, pooled, kernel_size=3, padding=1)
        trunk.add_module("local4", _gaussian(local, INIT_STD["local4"]))
        trunk.add_module("relu4", nn.ReLU(inplace=True))
        self.features = trunk

        if head == "gap":
            self.head = GAPHead()
        else:
            self.head = FCHead((local_maps, *local.output_size), num_classes,
                               dropout=0.5 if head == "fc-dropout" else 0.0, init_std=INIT_STD["fc"])


_CIFAR = dict(input_size=(3, 32, 32), num_classes=10)


@register_model(**_CIFAR, paper="Section 4.6, conventional CNN + fully connected (17.56%)")
def cnn_cifar10_fc(**kw) -> ConventionalCNN:
    """Dropout-paper CIFAR-10 CNN (3 conv + 1 locally connected, 16 maps) with a plain FC top."""
    return ConventionalCNN(head="fc", **kw)


@register_model(**_CIFAR, paper="Section 4.6, conventional CNN + fully connected + dropout (15.99%)")
def cnn_cifar10_fc_dropout(**kw) -> ConventionalCNN:
    """Dropout-paper CIFAR-10 CNN with dropout 0.5 on the locally connected layer, then FC."""
    return ConventionalCNN(head="fc-dropout", **kw)


@register_model(**_CIFAR, paper="Section 4.6, conventional CNN + global average pooling (16.46%)")
def cnn_cifar10_gap(**kw) -> ConventionalCNN:
    """Dropout-paper CIFAR-10 CNN with the locally connected layer cut to 10 maps and GAP on top."""
    return ConventionalCNN(head="gap", **kw)
