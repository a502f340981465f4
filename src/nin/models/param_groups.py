"""Optimizer parameter groups with the authors' per-layer learning-rate multipliers."""
from __future__ import annotations

from typing import Any

from torch import nn


def param_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """Group parameters by (lr multiplier, decayed?) for ``torch.optim``.

    Biases and normalization parameters get no weight decay (as in the authors' cuda-convnet and Caffe
    files). Each group keeps its multiplier under ``lr_mult`` so schedules can rescale it, and says under
    ``bias`` whether it holds those undecayed parameters, whose rates the authors' README keeps at a drop.
    """
    multipliers = model.lr_multipliers() if hasattr(model, "lr_multipliers") else {}
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decayed = param.ndim > 1
        mult = multipliers.get(name, 1.0)
        groups.setdefault((mult, decayed), []).append(param)
    return [
        {"params": params, "lr": lr * mult, "lr_mult": mult, "bias": not decayed,
         "weight_decay": weight_decay if decayed else 0.0}
        for (mult, decayed), params in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1]))
    ]
