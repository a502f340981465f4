"""The interface every registered network shares: features, a head, and class maps."""
from __future__ import annotations

import torch
from torch import nn


class ClassMapNetwork(nn.Module):
    """``features`` maps images to feature maps, ``head`` turns them into logits.

    Every network also exposes the maps its classifier pools (``class_maps``), whose spatial
    mean is the logits, and the per-layer learning-rate multipliers of the authors' configs.
    """

    features: nn.Module
    head: nn.Module

    def __init__(self, bias_lr_mult: float = 1.0, last_layer_lr_mult: float = 1.0,
                 last_layer_bias_lr_mult: float | None = None, head_takes_last_layer_rates: bool = False) -> None:
        """``head_takes_last_layer_rates`` gives the ``last_layer_*`` multipliers to a head with parameters instead
        of ``last_feature_layer()``: how the fully connected ablations ran before 2026-12-04 19:39 UTC, kept so that
        ``nin check`` reruns their records as they ran."""
        super().__init__()
        self.bias_lr_mult = bias_lr_mult
        self.last_layer_lr_mult = last_layer_lr_mult
        self.last_layer_bias_lr_mult = (
            bias_lr_mult * last_layer_lr_mult if last_layer_bias_lr_mult is None else last_layer_bias_lr_mult
        )
        self.head_takes_last_layer_rates = head_takes_last_layer_rates

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def class_maps(self, x: torch.Tensor) -> torch.Tensor:
        """(N, num_classes, h, w): the maps whose spatial mean is ``self(x)``."""
        return self.head.class_maps(self.forward_features(x))

    def last_feature_layer(self) -> nn.Module:
        """The last layer of ``features`` (cccp6 in NIN), whose rates the ``last_layer_*`` multipliers scale.

        The authors' files give cccp6 its own rates; a fully connected head on top of it (Table 5's ablation, for
        which no file was published) is one more layer at the base rates, and cccp6 keeps its own.
        """
        layers = [
            m for m in self.features.modules()
            if any(True for _ in m.parameters(recurse=False)) and not isinstance(m, nn.modules.batchnorm._NormBase)
        ]
        return layers[-1]

    def lr_multipliers(self) -> dict[str, float]:
        """Learning-rate multiplier of every parameter, by name, from the authors' configs."""
        head_rated = self.head_takes_last_layer_rates and any(True for _ in self.head.parameters())
        last = {id(p) for p in (self.head if head_rated else self.last_feature_layer()).parameters()}
        multipliers = {}
        for name, param in self.named_parameters():
            bias = name.endswith("bias")
            if id(param) in last:
                multipliers[name] = self.last_layer_bias_lr_mult if bias else self.last_layer_lr_mult
            else:
                multipliers[name] = self.bias_lr_mult if bias else 1.0
        return multipliers
