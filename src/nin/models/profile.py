"""Count parameters and multiply-adds per image of any network."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Profile:
    parameters: int
    multiply_adds: int  # of convolutions and linear layers (and any layer defining ``multiply_adds``), per image
    feature_sizes: tuple[tuple[int, int], ...]  # spatial size after each pooling layer


def _layer_macs(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
    per_image = output[0].numel()
    if hasattr(module, "multiply_adds"):
        return int(module.multiply_adds(inputs[0], output))
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return per_image * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return per_image * module.in_features
    return 0


def profile_model(model: nn.Module, input_size: tuple[int, int, int]) -> Profile:
    """Run one image of ``input_size`` (C, H, W) through ``model`` and count its work."""
    macs = 0
    sizes: list[tuple[int, int]] = []

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal macs
        macs += _layer_macs(module, inputs, output)
        if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
            sizes.append((output.shape[-2], output.shape[-1]))

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_size))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    params = sum(p.numel() for p in model.parameters())
    return Profile(params, macs, tuple(sizes))
