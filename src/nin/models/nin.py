"""The Network In Network and one builder per configuration of the paper and the authors' configs.

Widths, kernels and init stds follow ``PAPER.md`` (the authors' cuda-convnet and Caffe files).
Pooling is 3×3 stride 2 with the output size rounded up, as cuda-convnet and Caffe do
(``ceil_mode=True``): 32→16→8 for CIFAR/SVHN, 28→14→7 for MNIST.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from nin.layers import MLPConv, dropout_layer
from nin.models.base import ClassMapNetwork
from nin.models.heads import FCHead, GAPHead
from nin.models.registry import register_model


@dataclass(frozen=True)
class Stage:
    """One mlpconv layer and what follows it (pooling, dropout)."""

    widths: tuple[int, ...]
    kernel_size: int
    padding: int
    init_std: float | str | tuple[float, ...] | None = 0.05
    stride: int = 1
    pool: str | None = "max"  # "max", "avg" or None
    dropout: float = 0.5
    pool_ceil: bool = True  # round the pooled size up (cuda-convnet, Caffe) or down (PyTorch's default)


def _pool(kind: str, ceil: bool = True) -> nn.Module:
    if kind == "max":
        return nn.MaxPool2d(3, stride=2, ceil_mode=ceil)
    if kind == "avg":
        return nn.AvgPool2d(3, stride=2, ceil_mode=ceil)
    raise ValueError(f"unknown pooling {kind!r}; use 'max', 'avg' or None")


class NIN(ClassMapNetwork):
    """Stacked mlpconv layers with pooling and dropout between them, then a classifier head.

    ``head='gap'`` is the paper's global average pooling; ``'fc'`` and ``'fc-dropout'`` replace it
    with a fully connected layer on the same last maps (the ablation of Table 5). ``packed_dropout``
    draws the dropout masks from packed random bits (:mod:`nin.layers.dropout`), faster on CPUs;
    ``cuda_convnet_dropout`` scales the dropout as the authors' cuda-convnet does (at test, not in training).
    """

    def __init__(
        self,
        stages: Sequence[Stage],
        in_channels: int,
        input_size: int,
        head: str = "gap",
        batch_norm: bool = False,
        fc_init_std: float | None = 0.05,
        bias_lr_mult: float = 1.0,
        last_layer_lr_mult: float = 1.0,
        last_layer_bias_lr_mult: float | None = None,
        head_takes_last_layer_rates: bool = False,
        packed_dropout: bool = False,
        cuda_convnet_dropout: bool = False,
    ) -> None:
        super().__init__(bias_lr_mult, last_layer_lr_mult, last_layer_bias_lr_mult, head_takes_last_layer_rates)
        blocks: list[nn.Module] = []
        channels = in_channels
        for stage in stages:
            blocks.append(MLPConv(channels, stage.widths, stage.kernel_size, stage.stride, stage.padding,
                                  batch_norm=batch_norm, init_std=stage.init_std))
            if stage.pool is not None:
                blocks.append(_pool(stage.pool, stage.pool_ceil))
            if stage.dropout > 0:
                blocks.append(dropout_layer(stage.dropout, packed_dropout, cuda_convnet_dropout))
            channels = stage.widths[-1]
        self.features = nn.Sequential(*blocks)
        self.num_classes = channels
        if head == "gap":
            self.head = GAPHead()
        elif head in ("fc", "fc-dropout"):
            with torch.no_grad():  # shapes only: a copy on the meta device (BatchNorm's buffers included)
                meta = copy.deepcopy(self.features).to("meta")
                shape = meta(torch.zeros(1, in_channels, input_size, input_size, device="meta")).shape
            self.head = FCHead(tuple(shape[1:]), channels, dropout=0.5 if head == "fc-dropout" else 0.0,
                               init_std=fc_init_std, packed_dropout=packed_dropout,
                               cuda_convnet_dropout=cuda_convnet_dropout)
        else:
            raise ValueError(f"unknown head {head!r}; use 'gap', 'fc' or 'fc-dropout'")


def _cifar_stages(num_classes: int, stds: Sequence[float], pool2: str = "max", dropout: float = 0.5) -> list[Stage]:
    s = list(stds)
    return [
        Stage((192, 160, 96), 5, 2, tuple(s[0:3]), pool="max", dropout=dropout),
        Stage((192, 192, 192), 5, 2, tuple(s[3:6]), pool=pool2, dropout=dropout),
        Stage((192, 192, num_classes), 3, 1, tuple(s[6:9]), pool=None, dropout=0.0),
    ]


def _cifar10(head: str = "gap", dropout: float = 0.5, pool2: str = "max", num_classes: int = 10,
             batch_norm: bool = False, **kw) -> NIN:
    # NIN/cifar-10_def draws every layer with initW=0.05; NIN/cifar-10_params has epsB=2 x epsW: biases at 2x lr.
    kw.setdefault("bias_lr_mult", 2.0)
    return NIN(_cifar_stages(num_classes, [0.05] * 9, pool2, dropout), 3, 32, head, batch_norm, **kw)


_CIFAR = dict(input_size=(3, 32, 32), num_classes=10)


@register_model(**_CIFAR, paper="Table 1, NIN + Dropout (10.41% test error)")
def nin_cifar10(**kw) -> NIN:
    """NIN for CIFAR-10 as in the paper: max pooling after mlpconv 1 and 2, dropout 0.5, GAP."""
    return _cifar10(**kw)


@register_model(**_CIFAR, paper="Caffe model zoo CIFAR-10 NIN (89.6% accuracy)")
def nin_cifar10_caffe(**kw) -> NIN:
    """The Caffe model-zoo variant: average pool2; biases 2× lr, last 1×1 layer 0.1× lr."""
    kw.setdefault("last_layer_lr_mult", 0.1)
    kw.setdefault("last_layer_bias_lr_mult", 0.1)
    return _cifar10(pool2="avg", **kw)


@register_model(**_CIFAR, paper="Table 5, mlpconv + fully connected (11.59%)")
def nin_cifar10_fc(**kw) -> NIN:
    """Ablation: the NIN-CIFAR10 stack with a fully connected layer in place of GAP."""
    return _cifar10(head="fc", **kw)


@register_model(**_CIFAR, paper="Table 5, mlpconv + fully connected + dropout (10.88%)")
def nin_cifar10_fc_dropout(**kw) -> NIN:
    """Ablation: as ``nin_cifar10_fc`` with dropout 0.5 before the fully connected layer."""
    return _cifar10(head="fc-dropout", **kw)


@register_model(**_CIFAR, paper="Figure 3, NIN without dropout (14.51%)")
def nin_cifar10_nodropout(**kw) -> NIN:
    """Ablation: NIN-CIFAR10 without dropout between the mlpconv layers."""
    return _cifar10(dropout=0.0, **kw)


@register_model(input_size=(3, 32, 32), num_classes=100, paper="Table 2, NIN + Dropout (35.68%)")
def nin_cifar100(num_classes: int = 100, batch_norm: bool = False, dropout: float = 0.5, **kw) -> NIN:
    """NIN for CIFAR-100: the CIFAR-10 network with 100 maps and the authors' smaller init."""
    kw.setdefault("bias_lr_mult", 2.0)  # cuda-convnet epsW 0.01, epsB 0.02
    stds = [0.001, 0.01, 0.01] + [0.05] * 6
    return NIN(_cifar_stages(num_classes, stds, dropout=dropout), 3, 32, "gap", batch_norm, **kw)


@register_model(input_size=(3, 32, 32), num_classes=10, paper="Table 3, NIN + Dropout (2.35%)")
def nin_svhn(num_classes: int = 10, batch_norm: bool = False, dropout: float = 0.5, init_std: float | str = 0.05,
             **kw) -> NIN:
    """NIN for SVHN: wider layers, 5×5 kernels in all three mlpconv layers, last layer at 0.1× lr.

    The authors' NIN/svhn_def (cuda-convnet, commit 9f9e707) draws every layer with initW=0.05."""
    kw.setdefault("last_layer_lr_mult", 0.1)  # NIN/svhn_params: [cccp6] epsW=0.1 against 1 elsewhere
    stages = [
        Stage((128, 96, 64), 5, 2, init_std, dropout=dropout),
        Stage((320, 256, 128), 5, 2, init_std, dropout=dropout),
        Stage((384, 256, num_classes), 5, 2, init_std, pool=None, dropout=0.0),
    ]
    return NIN(stages, 3, 32, "gap", batch_norm, **kw)


@register_model(input_size=(1, 28, 28), num_classes=10, paper="Table 4, NIN + Dropout (0.47%)")
def nin_mnist(num_classes: int = 10, in_channels: int = 1, batch_norm: bool = False, dropout: float = 0.5,
              init_std: float | str = 0.05, **kw) -> NIN:
    """NIN for MNIST: fewer feature maps, 5×5 kernels, maps 28→14→7.

    The authors' NIN/mnist_def (cuda-convnet, commit 9f9e707) draws every layer with initW=0.05; the fast
    recipes use ``init_std="he"`` with BatchNorm."""
    stages = [
        Stage((96, 64, 48), 5, 2, init_std, dropout=dropout),
        Stage((128, 96, 48), 5, 2, init_std, dropout=dropout),
        Stage((128, 96, num_classes), 5, 2, init_std, pool=None, dropout=0.0),
    ]
    return NIN(stages, in_channels, 28, "gap", batch_norm, **kw)


@register_model(input_size=(3, 224, 224), num_classes=1000, paper="Caffe model zoo ImageNet 4-layer NIN (59.36% top-1)")
def nin_imagenet(num_classes: int = 1000, batch_norm: bool = False, **kw) -> NIN:
    """The Caffe model-zoo ImageNet NIN: four mlpconv layers, 224 crops, GAP over 6×6 maps.

    Init stds from the authors' train_val.prototxt (gist mavenlin/d802a5849de39225bcc6, weight_filler
    gaussian): conv1, conv3 and cccp8-1024 0.01, every other layer 0.05."""
    stages = [
        Stage((96, 96, 96), 11, 0, (0.01, 0.05, 0.05), stride=4, dropout=0.0),
        Stage((256, 256, 256), 5, 2, (0.05, 0.05, 0.05), dropout=0.0),
        Stage((384, 384, 384), 3, 1, (0.01, 0.05, 0.05), dropout=0.5),
        Stage((1024, 1024, num_classes), 3, 1, (0.05, 0.05, 0.01), pool=None, dropout=0.0),
    ]
    return NIN(stages, 3, 224, "gap", batch_norm, **kw)
