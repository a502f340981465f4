"""A registered network whose training numbers are scripted, so that the Trainer's rules can be tested exactly.

``scripted`` reads which training image it sees from the image itself: the tiny MNIST-format roots that
:func:`tiny_root` writes (through ``_idx.write_mnist``) hold the value ``i mod 256`` at pixel (0, 0) of image
``i``, which the ``unit`` preprocessing maps to ``i / 255``. From the image's index, the epoch and the step
(a step counter kept as a buffer, so it survives a checkpoint and a resume) it returns logits that make:

* the first ``wrong[epoch]`` images of the epoch wrong and the others right (so the epoch's training error
  is ``100 * wrong[epoch] / n``, whatever the order the loader shuffles them into);
* the classes in ``dead[epoch]`` exactly zero on every image of that epoch (a dead class map);
* every logit exactly zero at the steps ``all_dead_steps`` of the first epoch;
* every logit 1 on every image of the epochs where ``chance[epoch]`` is true: uniform class probabilities, the
  loss exactly ln(10), with no map at zero (the collapse of a fully connected head);
* with ``noise``, up to 0.5 added to every logit from torch's global generator in training (the losses, not the
  errors, then depend on it, as they do on dropout's masks).

Its two parameters (a weight of shape (10, 1) and a bias of shape (10,)) enter the logits as ``p - p.detach()``:
zero in value, so the script is exact, but with the gradient of the logits, so SGD really updates them and the
rate it used can be read off the update. ``lr_multipliers`` gives them the multipliers ``weight_lr_mult`` and
``bias_lr_mult``, as the authors' configs give cccp6 its 0.1x and 0.2x.

Entries past the end of a script repeat its last entry.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from _idx import write_mnist
from torch import nn

from nin.models import list_models, register_model

NAME = "scripted_test_net"
VALID = 10_000  # the MNIST loader holds out the last 10,000 training images as 'valid'


class ScriptedNet(nn.Module):
    def __init__(self, labels: list[int], steps_per_epoch: int, wrong: list[int] | None = None,
                 dead: list[list[int]] | None = None, all_dead_steps: list[int] | None = None,
                 chance: list[bool] | None = None,
                 weight_lr_mult: float = 1.0, bias_lr_mult: float = 1.0, noise: bool = False,
                 num_classes: int = 10) -> None:
        super().__init__()
        self.labels = torch.tensor(labels, dtype=torch.int64)
        self.steps_per_epoch = steps_per_epoch
        self.wrong = wrong or [0]
        self.dead = dead or [[]]
        self.all_dead_steps = set(all_dead_steps or [])
        self.chance = chance or [False]
        self.num_classes = num_classes
        self.mults = {"weight": weight_lr_mult, "bias": bias_lr_mult}
        self.noise = noise
        self.weight = nn.Parameter(torch.zeros(num_classes, 1))
        self.bias = nn.Parameter(torch.zeros(num_classes))
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))  # training forwards so far

    def lr_multipliers(self) -> dict[str, float]:
        return dict(self.mults)

    @staticmethod
    def _at(script: list, epoch: int):
        return script[min(epoch, len(script) - 1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        index = (x[:, 0, 0, 0].double() * 255).round().long()
        label = self.labels[index]
        step = int(self.steps)
        epoch, in_epoch = divmod(step, self.steps_per_epoch)
        if self.training:
            self.steps += 1
        wrong = index < self._at(self.wrong, epoch) if self.training else torch.zeros_like(index, dtype=torch.bool)
        predicted = torch.where(wrong, (label + 1) % self.num_classes, label)
        base = torch.ones(len(x), self.num_classes)
        base[torch.arange(len(x)), predicted] = 4.0
        if self.training and self.noise:  # like dropout, drawn from torch's global generator: a resume must restore it
            base += 0.5 * torch.rand(base.shape)
        if self.training and self._at(self.chance, epoch):
            base.fill_(1.0)
        if self.training:
            base[:, self._at(self.dead, epoch)] = 0.0
            if epoch == 0 and in_epoch in self.all_dead_steps:
                base.zero_()
        return base + (self.weight - self.weight.detach())[:, 0] + (self.bias - self.bias.detach())


if NAME not in list_models():
    @register_model(input_size=(1, 2, 2), num_classes=10, paper="not in the paper: a test double")
    def scripted_test_net(**kw) -> ScriptedNet:
        """A test double whose errors and dead maps follow a script."""
        return ScriptedNet(**kw)


def tiny_root(folder: Path, n_train: int, size: int = 2) -> tuple[Path, list[int]]:
    """An MNIST-format root whose 'train' split holds ``n_train`` images; returns it and their labels."""
    assert n_train <= 256, "the image index is stored in one uint8 pixel"
    arrays = write_mnist(folder / "mnist", n_train=VALID + n_train, n_test=10, gz=False, size=size)
    labels = arrays["train"][1][:n_train]
    return folder, [int(v) for v in np.asarray(labels)]


def scripted_recipe(labels: list[int], steps_per_epoch: int, batch_size: int, **fields) -> dict:
    """A recipe dict (for ``recipe_from_dict``) training the scripted net on the tiny root, on the CPU."""
    script = {k: fields.pop(k) for k in ("wrong", "dead", "all_dead_steps", "chance", "weight_lr_mult",
                                         "bias_lr_mult", "noise") if k in fields}
    return {
        "name": "scripted", "description": "test", "paper_ref": "not in the paper", "model": NAME,
        "model_args": {"labels": labels, "steps_per_epoch": steps_per_epoch, **script},
        "dataset": "mnist", "train_split": "train", "eval_split": "none", "test_splits": [],
        "preprocess": ["unit"], "batch_size": batch_size, "momentum": 0.0, "weight_decay": 0.0,
        "device": "cpu", "save_every": 1000, **fields,
    }
