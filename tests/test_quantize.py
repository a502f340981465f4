"""int8 inference: the quantized copy of the shipped MNIST NIN answers like the float model on real digits."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nin.cli import main
from nin.data import load_dataset
from nin.inference.pretrained import open_trained
from nin.inference.quantize import QuantizationError, quantize_int8


def test_int8_copy_agrees_with_the_float_model_and_leaves_it_untouched(shared_data: Path) -> None:
    trained = open_trained("nin_mnist")
    before = {k: v.clone() for k, v in trained.model.state_dict().items()}
    calibration = trained.preprocess(load_dataset("mnist", "train", root=shared_data).images[:500])
    test = load_dataset("mnist", "test", root=shared_data)
    x, y = trained.preprocess(test.images[:1000]), test.labels[:1000]
    int8 = quantize_int8(trained.model, calibration)
    with torch.no_grad():
        ref, out = trained.model.eval()(x), int8(x)
    assert (ref.argmax(1) == out.argmax(1)).float().mean() >= 0.99
    assert abs((ref.argmax(1) != y).sum().item() - (out.argmax(1) != y).sum().item()) <= 3
    assert any(".quantized" in type(m).__module__ for m in int8.modules())
    for k, v in trained.model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_cli_eval_reports_int8_error_close_to_fp32(shared_data: Path, capsys: pytest.CaptureFixture) -> None:
    errors = {}
    for precision in ("fp32", "int8"):
        assert main(["eval", "nin_mnist", "--split", "test", "--data-dir", str(shared_data), "--json",
                     "--precision", precision, "--calibration", "500"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["precision"] == precision and report["images"] == 10_000
        errors[precision] = report["error"]
    assert abs(errors["int8"] - errors["fp32"]) <= 0.1


@pytest.mark.parametrize("shape", [(0, 1, 28, 28), (28, 28)])
def test_calibration_must_be_a_batch_of_images(shape: tuple[int, ...]) -> None:
    with pytest.raises(QuantizationError, match="calibration needs a batch of preprocessed images"):
        quantize_int8(open_trained("nin_mnist").model, torch.zeros(shape))
