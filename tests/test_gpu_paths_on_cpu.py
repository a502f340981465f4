"""The fp16 loss-scaling path of the training step, which CI's CPU never takes, run with torch's CPU GradScaler.

The Trainer builds ``GradScaler("cuda", enabled=precision == "fp16")``, so on a CPU the scaler is disabled and the
step's scale / unscale / skip / update logic never runs. ``train_step`` takes the scaler as an argument, so the same
lines run here with an enabled CPU scaler, against plain SGD written out in the test. The lines that only a GPU
runs are listed in results/mutation/README.md.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

# the code under test: keep these imports together, so they are easy to re-point when modules move
from nin.train.engine import train_step

CPU = torch.device("cpu")


def _problem(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    return nn.Linear(4, 3), torch.randn(6, 4), torch.randint(0, 3, (6,))


def test_a_scaled_step_equals_plain_sgd_on_the_batch_mean() -> None:
    """Catches a step that skips the unscaling (``optimizer.step()`` instead of ``scaler.step``): its update
    would be 1024 times too large; and a loss not scaled by 1 / batch size."""
    model, x, y = _problem()
    reference, start = copy.deepcopy(model), copy.deepcopy(model)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_sum, logits = train_step(model, optimizer, scaler, x, y, device=CPU, precision="fp32", loss_scale=1 / 6)

    loss = F.cross_entropy(reference(x), y)  # mean over the batch
    loss.backward()
    with torch.no_grad():
        for p in reference.parameters():
            p -= 0.1 * p.grad
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7, msg=name)
    assert loss_sum.item() == pytest.approx(6 * loss.item(), rel=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(logits, start(x))  # the logits the step computed, before its update
    assert scaler.get_scale() == 2.0 ** 10  # no overflow, and growth only after 2000 clean steps


def test_an_overflowing_step_is_skipped_and_the_scale_halved() -> None:
    """An Inf in the batch makes the gradients non-finite: the scaler must skip the step (weights unchanged) and
    halve its scale. Catches a step that forgets ``scaler.update()`` or applies the step anyway."""
    model, x, y = _problem(1)
    before = copy.deepcopy(model.state_dict())
    x[2, 1] = float("inf")
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_sum, _ = train_step(model, optimizer, scaler, x, y, device=CPU, precision="fp32", loss_scale=1 / 6)
    assert not torch.isfinite(loss_sum)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert scaler.get_scale() == 2.0 ** 9
