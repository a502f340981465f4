"""A locally connected layer: a convolution whose filters are not shared between positions.

cuda-convnet calls it ``type=local``; the dropout paper's CIFAR-10 network (the conventional CNN of
the paper's Section 4.6) ends with one. PyTorch has no such layer.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


class LocallyConnected2d(nn.Module):
    """Every output position has its own filter bank and its own biases.

    ``weight[i, j]`` is the (out_channels, in_channels, kh, kw) filter bank applied at output
    position (i, j), so the layer equals ``F.conv2d`` when all positions hold the same bank.
    Biases are per position and channel, as cuda-convnet's local layer makes them
    (``modules * filters`` biases); they are stored flat, in (channel, row, column) order, so
    that optimizers which exempt 1-D parameters from weight decay exempt them too.

    The input size is fixed at construction because the weights are tied to positions. Output
    sizes follow PyTorch's convolution arithmetic, ``(size + 2·padding − kernel) // stride + 1``;
    cuda-convnet rounds that division up, which differs only when ``stride > 1``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        input_size: int | tuple[int, int],
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.input_size = _pair(input_size)
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.output_size = tuple(
            (size + 2 * pad - k) // s + 1
            for size, pad, k, s in zip(self.input_size, self.padding, self.kernel_size, self.stride)
        )
        out_h, out_w = self.output_size
        if out_h < 1 or out_w < 1:
            raise ValueError(
                f"kernel {self.kernel_size} does not fit input {self.input_size} with padding {self.padding}")
        kh, kw = self.kernel_size
        self.weight = nn.Parameter(torch.empty(out_h, out_w, out_channels, in_channels, kh, kw))
        self.bias = nn.Parameter(torch.empty(out_channels * out_h * out_w)) if bias else None
        self.reset_parameters()

    @property
    def fan_in(self) -> int:
        """Inputs seen by one output unit: in_channels · kh · kw."""
        return self.in_channels * self.kernel_size[0] * self.kernel_size[1]

    def reset_parameters(self) -> None:
        """PyTorch's convolution default, per position: U(−1/√fan_in, 1/√fan_in)."""
        bound = 1.0 / math.sqrt(self.fan_in)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.input_size:
            raise ValueError(f"LocallyConnected2d was built for {self.input_size} inputs, got {tuple(x.shape[-2:])}")
        out_h, out_w = self.output_size
        # (N, in·kh·kw, positions): one column per output position, in row-major order.
        patches = F.unfold(x, self.kernel_size, padding=self.padding, stride=self.stride)
        weight = self.weight.reshape(out_h * out_w, self.out_channels, self.fan_in)
        out = torch.einsum("nfp,pof->nop", patches, weight).reshape(x.shape[0], self.out_channels, out_h, out_w)
        if self.bias is not None:
            out = out + self.bias.view(self.out_channels, out_h, out_w)
        return out

    def multiply_adds(self, input: torch.Tensor, output: torch.Tensor) -> int:
        """Per image, counted as for a convolution: every output unit does fan_in multiply-adds."""
        return output[0].numel() * self.fan_in

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, input_size={self.input_size}, "
                f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"bias={self.bias is not None}")
