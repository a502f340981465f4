"""Global average pooling: the paper's parameter-free replacement for fully connected classifiers."""
from __future__ import annotations

import torch
from torch import nn


class GlobalAvgPool(nn.Module):
    """Average each feature map over space: (N, C, H, W) -> (N, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))
