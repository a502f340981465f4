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

REPO = Path(__file__).resolve().parents[1]


def test_int8_copy_agrees_with_the_float_model_and_leaves_it_untouched(shared_data: Path) -> None:
    trained = open_trained("nin_mnist.fast")
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


def test_cli_eval_reports_int8_error_close_to_the_recorded_run(shared_data: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    """`nin eval --precision int8` against the test error the shipped weights' training run recorded
    (results/mnist-fast/summary.json: 0.50%, 50 images), not against the same command's fp32 answer: catches an
    int8 path, or an evaluation, that drifted along with the code it would be compared with."""
    recorded = json.loads((REPO / "results" / "mnist-fast" / "summary.json").read_text())["tests"]["test"]
    assert main(["eval", "nin_mnist.fast", "--split", "test", "--data-dir", str(shared_data), "--json",
                 "--precision", "int8", "--calibration", "500"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["precision"] == "int8" and report["images"] == recorded["images"] == 10_000
    assert abs(report["error"] - recorded["error"]) <= 0.1  # at most 10 of the 10,000 images flip


@pytest.mark.parametrize("shape", [(0, 1, 28, 28), (28, 28)])
def test_calibration_must_be_a_batch_of_images(shape: tuple[int, ...]) -> None:
    with pytest.raises(QuantizationError, match="calibration needs a batch of preprocessed images"):
        quantize_int8(open_trained("nin_mnist.fast").model, torch.zeros(shape))
