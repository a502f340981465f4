"""Dropout at p = 1/2 whose mask comes from random bytes, eight mask bits to a byte.

PyTorch's dropout draws one random number per element. On a 2-core CPU that took 48 ms of a 281 ms
NIN-CIFAR10 training step, more than any convolution but one (``nin bench``'s step profile). Each
random byte holds eight fair, independent bits, so the mask is the same distribution (every element
kept with probability 1/2 and scaled by 2, independently) for an eighth of the random draws; forward
and backward took 13.6 ms instead of 48.7 ms here. The draws differ from ``nn.Dropout``'s, so a run
is reproducible with one or the other, not across them: networks take it on request
(``packed_dropout=True``), as the fast recipes do.
"""
from __future__ import annotations

import torch
from torch import nn


def half_mask(like: torch.Tensor) -> torch.Tensor:
    """0 or 2 for each element of ``like``, each with probability 1/2, independently; in ``like``'s dtype and
    memory layout (a channels_last mask for a channels_last input, so the product keeps the layout)."""
    n = like.numel()
    random_bytes = torch.empty((n + 7) // 8, dtype=torch.uint8, device=like.device).random_()
    # the shifts are made on the device: a copy from host memory cannot be captured in a CUDA graph
    shifts = torch.arange(8, dtype=torch.uint8, device=like.device)
    bits = (random_bytes[:, None] >> shifts) & 1
    flat = bits.reshape(-1)[:n].to(like.dtype) * 2
    if like.dim() == 4 and like.is_contiguous(memory_format=torch.channels_last):
        n_, c, h, w = like.shape
        return flat.view(n_, h, w, c).permute(0, 3, 1, 2)
    return flat.view(like.shape)


class PackedDropout(nn.Dropout):
    """``nn.Dropout(0.5)`` with masks from :func:`half_mask`; the identity in eval mode."""

    def __init__(self) -> None:
        super().__init__(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * half_mask(x) if self.training else x


class CudaConvnetDropout(nn.Dropout):
    """The authors' dropout (``DropoutNeuron`` in their cuda-convnet, ``PluginsSrc/include/extralayers.cuh``):
    kept units pass unscaled while training, and every unit is multiplied by 1 - p at test.

    That is PyTorch's dropout times 1 - p in both modes, and it trains another network from the same init and
    rates: the layer after it sees inputs 1 - p times as large, which is PyTorch's dropout with that layer's weights
    drawn with 1 - p times the std and learning at (1 - p)² times the rate (for p = 1/2: half the std, a quarter
    of the rate); its bias and every later layer are unchanged.
    """

    def __init__(self, p: float, packed: bool = False) -> None:
        super().__init__(p)
        self.packed = packed and p == 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x * (1 - self.p)
        kept = x * half_mask(x) if self.packed else nn.functional.dropout(x, self.p, training=True)
        return kept * (1 - self.p)


def dropout_layer(p: float, packed: bool = False, cuda_convnet: bool = False) -> nn.Module:
    """The dropout a network asks for: packed masks when asked and p is 1/2, PyTorch's otherwise; scaled as the
    authors' cuda-convnet scales it when ``cuda_convnet``."""
    if cuda_convnet:
        return CudaConvnetDropout(p, packed)
    return PackedDropout() if packed and p == 0.5 else nn.Dropout(p)
