"""Classifier heads that turn the last feature maps into logits and into class maps."""
from __future__ import annotations

import torch
from torch import nn

from nin.layers import GlobalAvgPool, dropout_layer


class GAPHead(nn.Module):
    """The paper's head: one map per class, averaged over space. No parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = GlobalAvgPool()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.pool(features)

    def class_maps(self, features: torch.Tensor) -> torch.Tensor:
        return features


class FCHead(nn.Module):
    """The ablation head of Table 5: flatten the maps, optional dropout, one linear layer.

    Its class maps are each position's share of the logit, scaled by h·w and offset by the bias,
    so that, as for GAP, the logits are the maps' spatial mean.
    """

    def __init__(self, feature_shape: tuple[int, int, int], num_classes: int, dropout: float = 0.0,
                 init_std: float | None = None, packed_dropout: bool = False,
                 cuda_convnet_dropout: bool = False) -> None:
        super().__init__()
        self.feature_shape = feature_shape
        channels, height, width = feature_shape
        self.dropout = (dropout_layer(dropout, packed_dropout, cuda_convnet_dropout) if dropout > 0
                        else nn.Identity())
        self.fc = nn.Linear(channels * height * width, num_classes)
        if init_std is not None:
            nn.init.normal_(self.fc.weight, std=init_std)
            nn.init.zeros_(self.fc.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(features).flatten(1))

    def class_maps(self, features: torch.Tensor) -> torch.Tensor:
        channels, height, width = self.feature_shape
        weight = self.fc.weight.view(-1, channels, height, width)
        contribution = torch.einsum("nchw,kchw->nkhw", self.dropout(features), weight)
        return contribution * (height * width) + self.fc.bias.view(1, -1, 1, 1)
