"""Evaluation's loss, error and per-class accuracy against values computed by hand on a tiny model.

The model's logits are its inputs (an identity layer), followed by dropout: with dropout on, every logit is
either zeroed or doubled, so a result equal to the hand-computed one proves dropout was off. Five images in
batches of two leave a last batch of one, so a loss averaged per batch differs from the loss per image.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

# the code under test: keep these imports together, so they are easy to re-point when modules move
from nin.inference.evaluate import evaluate

# logits of the five images (the model passes them through) and their labels; not representable in 16 bits, so an
# evaluation that ran in fp16 or bf16 when asked for fp32 would be off by far more than the tolerance
LOGITS = [[2.0, 0.1], [0.3, 1.7], [1.1, 1.55], [3.3, 0.2], [0.4, 2.2]]
LABELS = [0, 1, 0, 1, 1]


def cross_entropy_by_hand(logits: list[float], label: int) -> float:
    """-log softmax(logits)[label] for two classes: log(1 + exp(other - own))."""
    own, other = logits[label], logits[1 - label]
    return math.log1p(math.exp(other - own))


PER_IMAGE = [cross_entropy_by_hand(z, y) for z, y in zip(LOGITS, LABELS)]
LOSS = sum(PER_IMAGE) / 5  # per image: what evaluation must report
LOSS_PER_BATCH = (sum(PER_IMAGE[0:2]) / 2 + sum(PER_IMAGE[2:4]) / 2 + PER_IMAGE[4]) / 3  # the bug's answer
# image 3 ([1.1, 1.55], label 0) and image 4 ([3.3, 0.2], label 1) are wrong: 2 of 5
ERROR = 40.0
PER_CLASS = [50.0, 100.0 * 2 / 3]  # class 0: images 1 and 3, one right; class 1: images 2, 4, 5, two right


def dropout_model() -> nn.Module:
    identity = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        identity.weight.copy_(torch.eye(2))
    return nn.Sequential(nn.Flatten(), identity, nn.Dropout(0.5))


def data() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(LOGITS).reshape(5, 1, 1, 2), torch.tensor(LABELS)


def test_the_hand_values_tell_the_bugs_apart() -> None:
    """Guards the test: per-batch averaging and dropout must change the answer on this data."""
    assert abs(LOSS - LOSS_PER_BATCH) > 0.05
    model, (x, _) = dropout_model().train(), data()
    torch.manual_seed(0)
    with torch.no_grad():
        assert not torch.equal(model(x), x.reshape(5, 2))


@pytest.mark.parametrize("batch_size", [2, 5, 500])
def test_evaluation_matches_hand_computed_loss_and_error(batch_size: int) -> None:
    """Catches a loss averaged per batch instead of per image (batch size 2), dropout left on during evaluation,
    errors or per-class accuracies counted wrongly, and a model not put back in training mode afterwards."""
    model, (x, y) = dropout_model().train(), data()
    torch.manual_seed(0)
    result = evaluate(model, x, y, num_classes=2, batch_size=batch_size)
    assert result.loss == pytest.approx(LOSS, rel=1e-6)
    assert result.error == pytest.approx(ERROR, rel=1e-12)
    assert result.count == 5 and result.count_per_class == [2, 3] and result.correct_per_class == [1, 2]
    assert result.per_class_accuracy == pytest.approx(PER_CLASS, rel=1e-12)
    assert model.training  # evaluation leaves the model as it found it


def test_a_class_absent_from_the_split_has_no_accuracy() -> None:
    """A third class with no image: its accuracy is None (JSON has no NaN), and the others are unchanged."""
    model, (x, y) = dropout_model().eval(), data()
    result = evaluate(model, x, y, num_classes=3, batch_size=2)
    assert result.per_class_accuracy[:2] == pytest.approx(PER_CLASS) and result.per_class_accuracy[2] is None
    assert not model.training


def test_evaluation_on_an_empty_split_is_a_clear_error() -> None:
    """The documented error path: nothing to average over."""
    with pytest.raises(ValueError, match="^cannot evaluate on an empty split$"):
        evaluate(dropout_model(), torch.empty(0, 1, 1, 2), torch.empty(0, dtype=torch.int64), num_classes=2)


def test_channels_last_and_bf16_evaluation_agree_with_the_hand_values() -> None:
    """The options the recipes use on CPUs: channels-last input changes nothing; bf16 autocast changes the logits
    by its rounding only (8 bits of mantissa: well under 1% of this loss), and these errors not at all."""
    model, (x, y) = dropout_model().train(), data()
    result = evaluate(model, x, y, num_classes=2, batch_size=2, channels_last=True)
    assert result.loss == pytest.approx(LOSS, rel=1e-6) and result.error == pytest.approx(ERROR)
    bf16 = evaluate(model, x, y, num_classes=2, batch_size=2, precision="bf16")
    assert bf16.loss == pytest.approx(LOSS, rel=1e-2) and bf16.loss != pytest.approx(LOSS, rel=1e-6)
    assert bf16.error == pytest.approx(ERROR) and model.training


def test_test_time_flips_average_the_logits_of_each_image_and_its_mirror_image() -> None:
    """A model that reads only the left half of the image: with flips, each image's logits are the mean of its
    left half's and its right half's, computed here by hand."""
    class LeftHalf(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.tensor([[1.0, -1.0], [-2.0, 3.0]]))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            left = x[..., : x.shape[-1] // 2].mean(dim=(1, 2, 3))
            return torch.stack([left, left * left], dim=1) @ self.w

    torch.manual_seed(3)
    images, labels = torch.randn(5, 1, 2, 4), torch.tensor([0, 1, 1, 0, 1])
    model = LeftHalf()
    left = images[..., :2].mean(dim=(1, 2, 3))
    right = images[..., 2:].mean(dim=(1, 2, 3))
    by_hand = (torch.stack([left, left ** 2], 1) @ model.w + torch.stack([right, right ** 2], 1) @ model.w) / 2
    result = evaluate(model, images, labels, 2, batch_size=2, flip=True)
    expected_loss = F.cross_entropy(by_hand.detach(), labels).item()
    assert result.loss == pytest.approx(expected_loss, rel=1e-6)
    assert result.error == pytest.approx(100.0 * (by_hand.argmax(1) != labels).double().mean().item())
    assert evaluate(model, images, labels, 2, batch_size=2).loss != pytest.approx(expected_loss, rel=1e-6)
