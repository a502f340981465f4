"""The weights shipped in the package reproduce the run they came from."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from nin.cli import main
from nin.inference.weights import shipped_weights

REPO = Path(__file__).resolve().parents[1]


def test_nin_mnist_weights_are_shipped_with_their_record() -> None:
    weights = shipped_weights()["nin_mnist"]
    recorded = json.loads((REPO / "results" / weights.recipe / "summary.json").read_text())
    assert weights.accuracy == pytest.approx(100 - recorded["tests"]["test"]["error"])
    assert (REPO / "src" / "nin" / "pretrained" / weights.file).stat().st_size < 4_000_000


def test_shipped_weights_reach_their_recorded_error(shared_data: Path, capsys: pytest.CaptureFixture) -> None:
    weights = shipped_weights()["nin_mnist"]
    assert main(["eval", "nin_mnist", "--split", "test", "--data-dir", str(shared_data), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # the run measured in bf16, this evaluation runs in fp32: a few images may flip
    assert report["error"] == pytest.approx(100 - weights.accuracy, abs=0.1)


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
