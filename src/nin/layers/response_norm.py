"""cuda-convnet's spatial response normalization (``type=rnorm``), which PyTorch does not have.

``nn.LocalResponseNorm`` normalizes across maps (cuda-convnet's ``cmrnorm``). ``rnorm`` divides
each unit by the energy of its own map around it, so it needs a layer of its own.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SpatialResponseNorm(nn.Module):
    """x · (k + α/size² · Σ x²)^(−β), the sum over the size×size window of the same map.

    The window starts ``size // 2`` pixels above and left of the unit and is clipped to the map,
    as in cuda-convnet's ``kCNorm`` kernels; ``layer.py`` divides the config's ``scale`` by
    ``size²``, so ``alpha`` here is the config's ``scale``. An average pool of the zero-padded
    squares that counts the padding divides the window's sum by size², so α/size² · Σ x² is α times
    that average.
    """

    def __init__(self, size: int, alpha: float, beta: float, k: float = 1.0) -> None:
        super().__init__()
        if size < 1:
            raise ValueError(f"response normalization size must be at least 1, got {size}")
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        mean_square = F.avg_pool2d(x.square(), self.size, stride=1, padding=self.size // 2,
                                   count_include_pad=True)[..., :height, :width]
        return x * (self.k + self.alpha * mean_square).pow(-self.beta)

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"
