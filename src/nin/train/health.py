"""The training run's health checks and their messages: a diverged loss or parameter, and class maps that died.

NIN's last layer ends in a ReLU, and the global average of a map that is zero everywhere is a logit of
exactly zero with no gradient to bring it back: the network then predicts chance for that class (for
all of them, when every map dies, the loss sits at ln(K)). This is the most reported failure of NIN
ports, so the loop watches for it rather than training for hours at chance level. A head with biases (the fully
connected ablations) gives its biases, nearly the same logits for every image, when the maps it reads die (a rare
image still lit by dropout's masks): the first epoch watches for that too, and later the loop watches the loss.
"""
from __future__ import annotations

import math
import sys
from collections.abc import Sequence

import torch
from torch import nn

from nin.errors import NinError

DEAD_MAP_STEPS = 20  # consecutive first-epoch steps with one output for every image before calling the maps dead
# A batch whose logits vary over its images by at most this share of their largest magnitude gives one output for
# every image. results/cifar10-fc-dropout-authors-bf16-e8-dead-maps/first_epoch_spread/: cifar10-fc-dropout at lr
# 0.1 falls below it in most steps from step 110 on, as its maps die (a stop at step 194); in the first epochs of
# seven shipped recipes that train it stays above 0.014 (mnist; 0.011 without its warm-up), the CIFAR ones above 0.6.
SAME_OUTPUT_SPREAD = 0.005
DEAD_CLASS_EPOCHS = 3  # consecutive epochs a class map is zero on every training image before training stops
AT_CHANCE = 1e-3  # an epoch's training loss this close to ln(K) is that of uniform class probabilities
LEARNED_MARGIN = 0.5  # how far below ln(K) an epoch's training loss must fall before a return to it is a collapse
COLLAPSED_EPOCHS = 3  # consecutive epochs at ln(K) or above, after the network had learned, before training stops
CUDA_CHECK_EVERY = 25  # on CUDA, steps between the host's looks at the loss (each look waits for the GPU)


def logit_spread(logits: torch.Tensor) -> tuple[float, float]:
    """How far a batch's logits vary over its images (max - min of each class's logit, the largest over the classes)
    and their largest magnitude, read from the device at once."""
    spread, largest = torch.stack([(logits.amax(0) - logits.amin(0)).max(), logits.abs().max()]).tolist()
    return spread, largest


class TrainingError(NinError, RuntimeError):
    """Training stopped on purpose; the message explains why and what to do."""


class HealthMonitor:
    """Watches one run: call :meth:`after_step` after every step and :meth:`end_epoch` after every epoch.

    ``check_every`` is the number of steps between looks at the running loss sum (a NaN stays NaN in the
    sum, so a late look still catches it): 1 on a CPU, where a look is free, :data:`CUDA_CHECK_EVERY` on
    CUDA. ``kept`` in each call says which checkpoint survives a stop, for the message.
    """

    def __init__(self, classes: Sequence[str], lr: float, check_every: int = 1) -> None:
        if check_every < 1:
            raise ValueError(f"check_every must be at least 1, got {check_every}")
        self.classes = list(classes)
        self.lr = lr
        self.check_every = check_every
        self.dead_epochs = [0] * len(self.classes)  # per class: consecutive epochs with a dead map
        self.dead_steps = 0  # consecutive first-epoch steps with one output for every image (every logit zero included)
        self.lowest_loss = math.inf  # the lowest epoch training loss so far
        self.chance_epochs = 0  # consecutive epochs with the training loss at ln(K) or above

    def after_step(self, epoch: int, step: int, last_step: int, loss_sum: torch.Tensor, logits: torch.Tensor,
                   kept: str) -> None:
        """Stop on a non-finite running loss, and in the first epoch on all maps dead for DEAD_MAP_STEPS steps: every
        logit zero (global average pooling) or, in a batch of two images or more, one output for all of them (a head
        with biases reading dead maps)."""
        if (step % self.check_every == self.check_every - 1 or step == last_step) and not torch.isfinite(loss_sum):
            late = "" if self.check_every == 1 else f" (or up to {self.check_every - 1} steps before)"
            raise TrainingError(
                f"the loss became {loss_sum.item()} at epoch {epoch + 1}, step {step + 1}{late}: training diverged. "
                f"{kept} Lower the learning rate (now {self.lr}) or add a warm-up (--set warmup_epochs=2).")
        if epoch == 0:  # a host read per step, in the first epoch only
            spread, largest = logit_spread(logits)
            zero = largest == 0
            same = zero or (len(logits) > 1 and spread <= SAME_OUTPUT_SPREAD * largest)
            self.dead_steps = self.dead_steps + 1 if same else 0
            if self.dead_steps >= DEAD_MAP_STEPS:
                where = f"epoch 1, step {step + 1}"
                raise TrainingError(self._all_dead_message(where) if zero else self._same_output_message(where))

    def end_epoch(self, epoch: int, live_steps: Sequence[float], kept: str, warn: bool) -> None:
        """Count, per class, consecutive epochs whose map was zero on every training image (no step where it was
        live); warn while it lasts (when ``warn``: the main process), stop when it has lasted DEAD_CLASS_EPOCHS."""
        self.dead_epochs = [n + 1 if steps == 0 else 0 for n, steps in zip(self.dead_epochs, live_steps)]
        dead = [name for name, n in zip(self.classes, self.dead_epochs) if n >= DEAD_CLASS_EPOCHS]
        if dead:
            raise TrainingError(self._dead_classes_message(epoch, dead, kept))
        dying = [name for name, n in zip(self.classes, self.dead_epochs) if n]
        if dying and warn:
            print(f"warning: epoch {epoch + 1}: {_class_maps_were(dying)} zero on every training image; training "
                  f"stops if that lasts {DEAD_CLASS_EPOCHS} epochs", file=sys.stderr)

    def end_epoch_loss(self, epoch: int, train_loss: float) -> None:
        """Stop when the epoch training loss has sat at ln(K) or above for COLLAPSED_EPOCHS epochs after falling
        LEARNED_MARGIN below it: a collapse to chance. The same output for every image scores ln(K) only when it is
        uniform: a fully connected head's biases keep it a little above (2.3059-2.3062 for 10 classes in
        results/cifar10-fc-authors-bf16-e42-collapsed/). A slow start at ln(K) (tiny maps) has not learned yet."""
        chance = math.log(len(self.classes))
        self.chance_epochs = self.chance_epochs + 1 if train_loss > chance - AT_CHANCE else 0
        self.lowest_loss = min(self.lowest_loss, train_loss)
        if self.chance_epochs >= COLLAPSED_EPOCHS and self.lowest_loss <= chance - LEARNED_MARGIN:
            first = epoch + 2 - self.chance_epochs
            raise TrainingError(
                f"epoch {epoch + 1}: the training loss has been at least ln({len(self.classes)}) = {chance:.6f} since "
                f"epoch {first} ({train_loss:.4f} in the last), after falling to {self.lowest_loss:.4f}: the network "
                "collapsed to the same output for every image and predicts chance. Training was stopped; its "
                f"checkpoints from epoch {first} on are at chance too, so resuming does not help. Train again from "
                f"the start with a lower learning rate (--set lr={self.lr / 5:g}).")

    @staticmethod
    def check_parameters(model: nn.Module, epoch: int, kept: str) -> None:
        """Stop when a parameter holds NaN or Inf (a loss can stay finite while a rarely used weight is not)."""
        for name, p in model.named_parameters():
            if not torch.isfinite(p).all():
                raise TrainingError(f"parameter {name} holds NaN or Inf after epoch {epoch + 1}: training diverged. "
                                    f"{kept}")

    def first_epoch_loss_warning(self, train_loss: float) -> str | None:
        """A warning when the first epoch ends with the loss still at ln(K): live but tiny maps."""
        k = len(self.classes)
        if abs(train_loss - math.log(k)) >= AT_CHANCE:
            return None
        return (f"warning: after epoch 1 the training loss is still ln({k}) = {train_loss:.4f}: the class maps are "
                "alive but tiny (the signal shrinks through the layers). Training goes on; if it stays there, raise "
                "the init std or the learning rate.")

    def _all_dead_message(self, where: str) -> str:
        k = len(self.classes)
        return (
            f"{where}: every class map is zero, so the loss sits at ln({k}) = {math.log(k):.6f} and the network "
            "predicts chance. The ReLU on the last mlpconv layer has switched off all class maps at once "
            f"(lr {self.lr}, Gaussian init). Remedies: a lower learning rate (--set lr={self.lr / 5:g}), a warm-up "
            "(--set warmup_epochs=2), a smaller init for the last layer, or BatchNorm "
            "(--set model_args.batch_norm=true, not in the paper). Training was stopped instead of running for hours "
            "at chance level."
        )

    def _same_output_message(self, where: str) -> str:
        k = len(self.classes)
        return (
            f"{where}: the network gives the same logits for every image (to within {SAME_OUTPUT_SPREAD:.1%}), so "
            f"it cannot tell them apart (the loss stays near ln({k}) = {math.log(k):.6f}). The ReLU before the fully "
            f"connected head has switched off every map it reads (lr {self.lr}, Gaussian init): the head outputs its "
            f"biases, and the maps get no gradient to come back. Remedies: a lower learning rate "
            f"(--set lr={self.lr / 2:g}) or a warm-up of the rate (--set warmup_epochs=2). Training was stopped "
            "instead of running for hours at chance level."
        )

    def _dead_classes_message(self, epoch: int, dead: list[str], kept: str) -> str:
        one = len(dead) == 1
        return (
            f"epoch {epoch + 1}: {_class_maps_were(dead)} zero on every training image for {DEAD_CLASS_EPOCHS} epochs "
            f"({len(dead)} of {len(self.classes)} classes), so the network cannot predict "
            f"{'that class' if one else 'those classes'}. The ReLU "
            "on the last layer has switched them off, and a map that is zero everywhere gets no gradient to come "
            f"back. Training was stopped. {kept} Remedies: a warm-up of the rate (--set warmup_epochs=2), a lower "
            f"learning rate (--set lr={self.lr / 2:g}) or BatchNorm (--set model_args.batch_norm=true, not in the "
            "paper)."
        )


def _class_maps_were(classes: Sequence[str]) -> str:
    """A dead-map message's subject and verb, singular or plural: the class map of 'cat' was, the class maps of
    'cat', 'dog' were."""
    names = ", ".join(map(repr, classes))
    return f"the class map of {names} was" if len(classes) == 1 else f"the class maps of {names} were"
