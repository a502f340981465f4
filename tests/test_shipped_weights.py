"""The weights shipped in the package reproduce the run they came from."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from nin.cli import main
from nin.weights import shipped_weights

REPO = Path(__file__).resolve().parents[1]


def test_nin_mnist_weights_are_shipped_with_their_record() -> None:
    weights = shipped_weights()["nin_mnist"]
    recorded = json.loads((REPO / "results" / weights.recipe / "summary.json").read_text())
    assert weights.accuracy == pytest.approx(100 - recorded["tests"]["test"]["error"])
    assert (REPO / "src" / "nin" / "weights" / weights.file).stat().st_size < 4_000_000


def test_shipped_weights_reach_the_error_their_training_run_recorded(shared_data: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    """`nin eval nin_mnist` against results/mnist-fast/summary.json: the test error the training run measured
    at its end (the Trainer's evaluation, in bf16, on the model in memory), not the sidecar's accuracy that the
    export copied from it. Another code path: catches weights, preprocessing or evaluation that changed since."""
    record = json.loads((REPO / "results" / "mnist-fast" / "summary.json").read_text())["tests"]["test"]
    assert record["images"] == 10_000 and record["error"] == pytest.approx(0.50)  # 50 test images wrong
    assert main(["eval", "nin_mnist", "--split", "test", "--data-dir", str(shared_data), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 10_000 and report["precision"] == "fp32"
    # the run measured in bf16, this evaluation runs in fp32: up to 3 of the 10,000 images may flip (0.01 each)
    assert report["error"] == pytest.approx(record["error"], abs=0.03)
    for digit, accuracy in record["per_class_accuracy"].items():
        assert report["per_class_accuracy"][digit] == pytest.approx(accuracy, abs=0.5), digit  # 2-3 images


def test_predict_works_out_of_the_box(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from nin.data import load_dataset

    test = load_dataset("mnist", "test", root=shared_data)
    paths = []
    for i in range(5):
        path = tmp_path / f"digit{i}.png"
        Image.fromarray(test.images[i, 0].numpy()).resize((56, 56)).save(path)  # any size is accepted
        paths.append(str(path))
    assert main(["predict", "nin_mnist", *paths, "--json", "--top-k", "1"]) == 0
    answers = json.loads(capsys.readouterr().out)
    assert [a["top_k"][0]["class"] for a in answers] == [str(int(y)) for y in test.labels[:5]]
