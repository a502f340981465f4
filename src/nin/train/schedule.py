"""Learning-rate schedules, stepped once per epoch (or per step for warmup and one-cycle).

The paper's rule (Section 4.1): train until the training accuracy stops improving, divide the
rate by 10, repeat once more, then stop. "Stops improving" is made precise here: no epoch whose
training error beats the best so far by more than ``min_delta`` percentage points for
``patience`` consecutive epochs. The epochs where the rate dropped are recorded.

The authors' README schedule for CIFAR-10 is ``step`` with milestones 200 and 230 of 260 epochs,
and it divides the weights' rates only (epsW): ``factor(..., held=True)`` is the factor of the
rates a drop leaves alone, the warm-up alone.
"""
from __future__ import annotations

import math
from typing import Any


class Schedule:
    """Learning-rate factor (relative to the recipe's base rate) as a function of training progress."""

    def __init__(self, kind: str, epochs: int, steps_per_epoch: int, *, warmup_epochs: float = 0,
                 milestones: list[int] | None = None, gamma: float = 0.1, patience: int = 10,
                 min_delta: float = 0.1, max_drops: int = 2) -> None:
        self.kind = kind
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.warmup_epochs = warmup_epochs
        self.milestones = sorted(milestones or [])
        self.gamma = gamma
        self.patience = patience
        self.min_delta = min_delta
        self.max_drops = max_drops
        # state of the paper's plateau rule
        self.drops: list[int] = []  # epochs after which the rate was divided
        self.best_train_error = math.inf
        self.epochs_without_improvement = 0
        self.finished = False

    def factor(self, epoch: int, step: int = 0, held: bool = False) -> float:
        """Rate factor for ``step`` (0-based, within the epoch) of ``epoch`` (0-based).

        ``held``: the factor of a rate that the drops of the ``paper`` and ``step`` schedules do not divide.
        """
        progress = epoch + step / self.steps_per_epoch
        warm = min(1.0, (progress + 1 / self.steps_per_epoch) / self.warmup_epochs) if self.warmup_epochs else 1.0
        if self.kind == "constant" or (held and self.kind in ("paper", "step")):
            return warm
        if self.kind == "paper":
            return warm * self.gamma ** len(self.drops)
        if self.kind == "step":
            return warm * self.gamma ** sum(epoch >= m for m in self.milestones)
        if self.kind == "cosine":
            return warm * 0.5 * (1 + math.cos(math.pi * progress / self.epochs))
        if self.kind == "onecycle":  # linear from 1/25 up to the peak at 25% of training, then down to zero
            peak = 0.25 * self.epochs
            if progress < peak:
                return 0.04 + 0.96 * progress / peak
            return max(0.0, (self.epochs - progress) / (self.epochs - peak))
        raise ValueError(f"unknown schedule {self.kind!r}")

    def end_epoch(self, epoch: int, train_error: float) -> None:
        """Feed the epoch's training error (%) to the paper's rule; sets ``finished`` when it says stop."""
        if self.kind != "paper":
            return
        if train_error < self.best_train_error - self.min_delta:
            self.best_train_error = train_error
            self.epochs_without_improvement = 0
            return
        self.epochs_without_improvement += 1
        if self.epochs_without_improvement >= self.patience:
            if len(self.drops) >= self.max_drops:
                self.finished = True
            else:
                self.drops.append(epoch)
                self.best_train_error = math.inf  # the new rate gets its own plateau to find
                self.epochs_without_improvement = 0

    def state_dict(self) -> dict[str, Any]:
        return {"drops": list(self.drops), "best_train_error": self.best_train_error,
                "epochs_without_improvement": self.epochs_without_improvement, "finished": self.finished}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.drops = list(state["drops"])
        self.best_train_error = float(state["best_train_error"])
        self.epochs_without_improvement = int(state["epochs_without_improvement"])
        self.finished = bool(state["finished"])
