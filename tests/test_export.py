"""Exported models carry the checkpoint's preprocessing and give PyTorch's logits on real MNIST images."""
from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch
from _checkpoints import data_root, mnist, mnist_checkpoint, synthetic_checkpoint, synthetic_digits

from nin.cli import main
from nin.data import Pipeline, build_pipeline, load_dataset
from nin.inference.export import ExportError, export_checkpoint, export_onnx
from nin.inference.trained import TrainedModel, load_trained
from nin.models import create_model
from nin.train.recipe import list_recipes, load_recipe

PIPELINES = [("unit",), ("gcn", "zca"), ("gcn", "lcn", "standardize")]


@functools.cache
def _real_images(dataset: str) -> torch.Tensor:
    """64 real images shaped like the dataset's (CIFAR-100, SVHN and folder-fast's 32×32 RGB: CIFAR-10 stands in)."""
    if dataset in ("mnist", "fashion-mnist"):
        root = data_root()
        if not (root / dataset).is_dir():
            pytest.skip(f"needs {root / dataset}")
        return load_dataset(dataset, "test", root=root).images[:64]
    if not (data_root() / "cifar-10-lossless-subset").is_dir():
        pytest.skip("needs the lossless CIFAR-10 test subset")
    return load_dataset("cifar10", "test-lossless-1000", root=data_root()).images[:64]


@functools.cache
def _fitted(preprocess: str, dataset: str) -> Pipeline:
    return build_pipeline(json.loads(preprocess)).fit(_real_images(dataset))


@pytest.mark.parametrize("name", list_recipes())
def test_every_shipped_recipe_exports_to_onnx_with_its_preprocessing(name: str, tmp_path) -> None:
    """The recipe's network with its preprocessing fitted on real images, exported and run by onnxruntime,
    gives PyTorch's logits: an export that dropped a step (as the old copies dropped mean_image) or
    traced a batch size in would fail here."""
    ort = pytest.importorskip("onnxruntime")
    recipe = load_recipe(name)
    images = _real_images(recipe.dataset)
    torch.manual_seed(0)
    model = create_model(recipe.model, **recipe.model_args).eval()
    pipeline = _fitted(json.dumps(recipe.preprocess), recipe.dataset)
    classes = [str(i) for i in range(model.num_classes)]
    trained = TrainedModel(model, recipe.model, recipe.model_args, pipeline, classes, recipe.dataset,
                           tuple(images.shape[1:]), {"name": name}, [])
    export_onnx(trained, tmp_path / "model.onnx")
    expected = trained.logits(images[:5])
    scale = expected.abs().max().item()
    assert scale > 0, "an all-zero output would make this comparison meaningless"
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(["logits"], {"images": images[:5].float().numpy()})
    assert np.abs(got - expected.numpy()).max() <= 1e-4 * max(scale, 1.0)


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
    with pytest.raises(ExportError, match="is the source itself"):
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
