"""Exported models carry the checkpoint's preprocessing and give PyTorch's logits on real MNIST images."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from _checkpoints import mnist, mnist_checkpoint, synthetic_checkpoint, synthetic_digits

from nin.cli import main
from nin.inference.export import ExportError, export_checkpoint, preprocessing_module
from nin.inference.trained import load_trained

PIPELINES = [("unit",), ("gcn", "zca"), ("gcn", "lcn", "standardize")]


@pytest.mark.parametrize("preprocess", PIPELINES, ids="+".join)
def test_preprocessing_module_matches_the_fitted_pipeline(preprocess, tmp_path) -> None:
    trained = load_trained(synthetic_checkpoint(tmp_path, preprocess))
    images = synthetic_digits(16, seed=1)[0]
    expected = trained.preprocess(images)
    got = preprocessing_module(trained.preprocess, 1)(images.float())
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("preprocess", PIPELINES, ids="+".join)
def test_onnx_logits_match_pytorch_on_real_mnist(preprocess, tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    images = mnist("test").images[:200]
    checkpoint = mnist_checkpoint(tmp_path, preprocess)
    (path,) = export_checkpoint(checkpoint, "onnx", tmp_path / "model.onnx")
    expected = load_trained(checkpoint).logits(images)
    assert expected.abs().max() > 1e-3, "an all-zero output would make this comparison meaningless"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(["logits"], {"images": images.float().numpy()})
    assert got.shape == tuple(expected.shape)
    assert np.abs(got - expected.numpy()).max() <= 1e-4


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_torchscript_round_trip_any_batch_size(tmp_path) -> None:
    checkpoint = synthetic_checkpoint(tmp_path, ("gcn", "zca"))
    (path,) = export_checkpoint(checkpoint, "torchscript")
    assert path == checkpoint.with_suffix(".torchscript.pt")
    loaded = torch.jit.load(str(path))
    images = synthetic_digits(5, seed=2)[0]
    expected = load_trained(checkpoint).logits(images)
    torch.testing.assert_close(loaded(images.float()), expected, rtol=1e-5, atol=1e-5)


def test_unknown_format_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(ExportError, match="unknown export format 'tflite'"):
        export_checkpoint(synthetic_checkpoint(tmp_path), "tflite")


def test_export_never_overwrites_the_checkpoint(tmp_path) -> None:
    checkpoint = synthetic_checkpoint(tmp_path)
    with pytest.raises(ExportError, match="is the checkpoint itself"):
        export_checkpoint(checkpoint, "torchscript", checkpoint)


def test_cli_export_writes_the_file(tmp_path, capsys) -> None:
    checkpoint = synthetic_checkpoint(tmp_path)
    out = tmp_path / "sub" / "m.onnx"
    assert main(["export", str(checkpoint), "--format", "onnx", "--out", str(out)]) == 0
    assert out.is_file() and f"wrote {out}" in capsys.readouterr().out
    assert [p.name for p in tmp_path.joinpath("sub").iterdir()] == ["m.onnx"]  # no temporary files left


def test_cli_export_of_a_missing_checkpoint_says_so(tmp_path, capsys) -> None:
    assert main(["export", str(tmp_path / "nope.pt"), "--format", "onnx"]) == 2
    assert "nope.pt does not exist" in capsys.readouterr().err
