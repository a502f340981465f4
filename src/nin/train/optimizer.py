"""The optimizer and the learning rate of every parameter group at every step.

SGD with momentum over :func:`nin.models.param_groups`, so each group carries its per-layer multiplier
(the authors' biases at 2x, their last 1x1 layer at 0.1x) and whether it holds biases, whose rates the
authors' README keeps at a drop (``hold_bias_rates``).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nin.models import param_groups
from nin.train.recipe import Recipe
from nin.train.schedule import Schedule


def sgd(groups: list[dict[str, Any]], *, lr: float, momentum: float, nesterov: bool = False) -> torch.optim.SGD:
    """SGD over parameter groups; on a GPU the fused update (one kernel per group: launches are what a small
    network waits for there), on a CPU PyTorch's default, which the records were trained with: the update is
    0.25 ms of a 246 ms step there (``results/bench/cpu-layers-packed-dropout.json``, the profile)."""
    on_gpu = groups[0]["params"][0].device.type == "cuda"
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov, fused=on_gpu or None)


def build_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.SGD:
    groups = param_groups(model, recipe.lr, recipe.weight_decay, recipe.head_weight_decay)
    return sgd(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov)


def build_schedule(recipe: Recipe, steps_per_epoch: int) -> Schedule:
    return Schedule(recipe.schedule, recipe.epochs, steps_per_epoch, warmup_epochs=recipe.warmup_epochs,
                    milestones=recipe.milestones, gamma=recipe.gamma, patience=recipe.plateau_patience,
                    min_delta=recipe.plateau_min_delta, max_drops=recipe.plateau_max_drops)


def set_rates(optimizer: torch.optim.Optimizer, schedule: Schedule, recipe: Recipe, epoch: int, step: int) -> float:
    """Set every group's rate for this step: base rate × schedule factor × the group's multiplier; returns the
    weights' base rate (the one the records show)."""
    factor = schedule.factor(epoch, step)
    held = schedule.factor(epoch, step, held=True) if recipe.hold_bias_rates else factor
    for group in optimizer.param_groups:
        group["lr"] = recipe.lr * (held if group["bias"] else factor) * group["lr_mult"]
    return recipe.lr * factor
