"""The mlpconv layer: a small MLP slid over every patch, i.e. a k×k conv followed by 1×1 convs."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

InitStd = float | str | Sequence[float] | None


def _per_layer(value: InitStd, n: int, what: str) -> list[float | str | None]:
    if value is None or isinstance(value, (int, float, str)):
        return [value] * n
    values = list(value)
    if len(values) != n:
        raise ValueError(f"{what} has {len(values)} entries but the mlpconv layer has {n} convolutions")
    return values


class MLPConv(nn.Module):
    """k×k convolution then any number of 1×1 convolutions ("cccp"), each followed by ReLU.

    ``widths[0]`` is the k×k convolution's output channels, the rest are the 1×1 layers'.
    ``init_std`` draws weights from N(0, std²) with zero biases, as the authors' configs do
    (one std for all layers or one per layer); ``"he"`` uses std = √(2 / fan_in), which keeps the
    signal's scale through ReLU layers, for recipes that do not follow the authors' stds (BatchNorm);
    ``"xavier"`` draws weights with Glorot's uniform rule and keeps PyTorch's default biases, as the
    d2l.ai book's networks do; ``None`` keeps PyTorch's default init.
    ``batch_norm`` inserts BatchNorm before each ReLU: not in the paper.
    """

    def __init__(
        self,
        in_channels: int,
        widths: Sequence[int],
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        last_activation: bool = True,
        batch_norm: bool = False,
        init_std: InitStd = None,
    ) -> None:
        super().__init__()
        if not widths:
            raise ValueError("MLPConv needs at least one width (the k×k convolution's output channels)")
        stds = _per_layer(init_std, len(widths), "init_std")
        layers: list[nn.Module] = []
        channels = in_channels
        for i, (width, std) in enumerate(zip(widths, stds)):
            first = i == 0
            conv = nn.Conv2d(
                channels,
                width,
                kernel_size=kernel_size if first else 1,
                stride=stride if first else 1,
                padding=padding if first else 0,
                bias=not batch_norm,
            )
            if std == "he":
                std = (2.0 / (conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1])) ** 0.5
            elif std == "xavier":
                nn.init.xavier_uniform_(conv.weight)
                std = None
            elif isinstance(std, str):
                raise ValueError(f"init_std {std!r} is not a number; use a std, 'he', 'xavier' or None")
            if std is not None:
                nn.init.normal_(conv.weight, mean=0.0, std=std)
                if conv.bias is not None:
                    nn.init.zeros_(conv.bias)
            layers.append(conv)
            if batch_norm:
                layers.append(nn.BatchNorm2d(width))
            if last_activation or i < len(widths) - 1:
                layers.append(nn.ReLU(inplace=True))
            channels = width
        self.layers = nn.Sequential(*layers)
        self.in_channels = in_channels
        self.out_channels = channels

    @property
    def convs(self) -> list[nn.Conv2d]:
        """The convolutions in order: the k×k one first, then the 1×1 ones."""
        return [m for m in self.layers if isinstance(m, nn.Conv2d)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
