"""Optimizer parameter groups with the authors' per-layer learning-rate multipliers."""
from __future__ import annotations

from typing import Any

from torch import nn


def head_weights(model: nn.Module) -> list[nn.Parameter]:
    """The decayed parameters of the model's classifier head (none under global average pooling)."""
    head = getattr(model, "head", None)
    return [] if head is None else [p for p in head.parameters() if p.ndim > 1]


def param_groups(model: nn.Module, lr: float, weight_decay: float,
                 head_weight_decay: float | None = None) -> list[dict[str, Any]]:
    """Group parameters by (lr multiplier, decayed?, weight decay) for ``torch.optim``.

    Biases and normalization parameters get no weight decay (as in the authors' cuda-convnet and Caffe
    files); the head's weights get ``head_weight_decay`` where given (cuda-convnet's per-layer ``wc``).
    Each group keeps its multiplier under ``lr_mult`` so schedules can rescale it, and says under ``bias``
    whether it holds those undecayed parameters, whose rates the authors' README keeps at a drop.
    """
    multipliers = model.lr_multipliers() if hasattr(model, "lr_multipliers") else {}
    own_decay = {id(p) for p in head_weights(model)} if head_weight_decay is not None else set()
    if head_weight_decay is not None and not own_decay:
        raise ValueError(f"head_weight_decay = {head_weight_decay}: the model's head has no weights to decay")
    groups: dict[tuple[float, bool, float], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decayed = param.ndim > 1
        decay = 0.0 if not decayed else head_weight_decay if id(param) in own_decay else weight_decay
        groups.setdefault((multipliers.get(name, 1.0), decayed, decay), []).append(param)
    return [
        {"params": params, "lr": lr * mult, "lr_mult": mult, "bias": not decayed, "weight_decay": decay}
        for (mult, decayed, decay), params in sorted(groups.items(), key=lambda kv: kv[0])
    ]
