"""Evaluation: loss, error and per-class accuracy of a model on a preprocessed split."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nin.utils.distributed import World, all_reduce_sum


@dataclass(frozen=True)
class EvalResult:
    loss: float
    error: float  # %
    correct_per_class: list[int]
    count_per_class: list[int]

    @property
    def count(self) -> int:
        return sum(self.count_per_class)

    @property
    def per_class_accuracy(self) -> list[float | None]:
        """Accuracy of each class in %, None for a class the split does not contain (JSON has no NaN)."""
        return [100.0 * c / n if n else None for c, n in zip(self.correct_per_class, self.count_per_class)]


def autocast(device: torch.device, precision: str, cache_enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16/fp16 autocast on the device, or nothing for fp32 (``cache_enabled=False`` for a CUDA graph capture)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16,
                          cache_enabled=cache_enabled)


def resident_dtype(precision: str) -> torch.dtype:
    """The dtype to keep preprocessed images in: autocast casts a convolution's input to its low precision
    anyway, so storing them that way changes no result and halves the memory a resident dataset takes."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, num_classes: int, *,
             batch_size: int = 500, precision: str = "fp32", channels_last: bool = False, flip: bool = False,
             world: World = World()) -> EvalResult:
    """Each process evaluates its contiguous share of the split; the sums are combined.

    ``flip``: test-time flips, the logits averaged over each image and its mirror image (a fast recipe's
    evaluation protocol, not the paper's)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters(), images).device  # a quantized model keeps no parameters: its input's device
    share = torch.arange(len(images)).tensor_split(world.world_size)[world.rank]
    totals = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, count
    correct = torch.zeros(num_classes, dtype=torch.float64, device=device)
    counts = torch.zeros(num_classes, dtype=torch.float64, device=device)
    for batch in share.split(batch_size):
        x = images[batch].to(device, non_blocking=True)
        y = labels[batch].to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            logits = model(x).float()
            if flip:
                logits = (logits + model(x.flip(3)).float()) / 2
        totals[0] += F.cross_entropy(logits, y, reduction="sum").double()
        totals[1] += len(y)
        hits = (logits.argmax(1) == y).double()
        correct.index_add_(0, y, hits)
        counts.index_add_(0, y, torch.ones_like(hits))
    model.train(was_training)
    summed = all_reduce_sum(torch.cat([totals, correct, counts]), world).cpu()
    loss_sum, n = summed[0].item(), summed[1].item()
    correct_pc = summed[2:2 + num_classes].round().long().tolist()
    count_pc = summed[2 + num_classes:].round().long().tolist()
    if n == 0:
        raise ValueError("cannot evaluate on an empty split")
    return EvalResult(loss_sum / n, 100.0 * (1 - sum(correct_pc) / n), correct_pc, count_pc)
