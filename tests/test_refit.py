"""Weights that leave their fitted preprocessing out of the file and fit it again on first use.

The preprocessing here is GCN + ZCA fitted on the 10,000 real MNIST `valid` images, standing in for the CIFAR-10
training split that the paper's network needs (same code path, a 784-pixel ZCA instead of a 3,072-pixel one).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _checkpoints import checkpoint_state, data_root, mnist
from safetensors.torch import load_file

from nin.checkpoint import save_checkpoint
from nin.cli import main
from nin.inference.export import ExportError, export_checkpoint
from nin.inference.refit import RefitError
from nin.inference.weights import WeightsError, load_weights, read_weights

FIT_SPLIT = "valid"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch) -> Path:
    """Each test gets its own empty ~/.cache/nin, so no test sees another's fitted preprocessing."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "nin" / "preprocess"


def _checkpoint(folder: Path, filter_bias: float = 0.1, fit_images: torch.Tensor | None = None) -> Path:
    """A nin_mnist checkpoint whose GCN + ZCA was fitted on ``fit_images`` (default: all of MNIST `valid`),
    with a recipe that says it trained on `valid`."""
    images = mnist(FIT_SPLIT).images if fit_images is None else fit_images
    state = checkpoint_state(images, ("gcn", {"name": "zca", "filter_bias": filter_bias}))
    state["recipe"] = {**state["recipe"], "train_split": FIT_SPLIT}
    path = folder / f"zca-{filter_bias}.pt"
    save_checkpoint(path, state)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    """A checkpoint and the weights exported from it with --refit-preprocess."""
    folder = tmp_path_factory.mktemp("refit")
    checkpoint = _checkpoint(folder)
    export_checkpoint(checkpoint, "safetensors", folder / "net.safetensors", refit_preprocess=True,
                      data_dir=data_root())
    return checkpoint, folder / "net.safetensors"


def _raw_batch() -> torch.Tensor:
    return mnist("test").images[:16].float()


def test_the_file_leaves_the_fitted_tensors_out_and_records_the_images(exported) -> None:
    _, weights = exported
    assert not [k for k in load_file(weights) if k.startswith("preprocess")]
    fit = json.loads(weights.with_suffix(".json").read_text())["preprocess_fit"]
    assert (fit["dataset"], fit["split"]) == ("mnist", FIT_SPLIT)
    assert len(fit["images_sha256"]) == 64


def test_first_use_refits_the_trained_preprocessing_and_gives_the_same_outputs(exported, private_cache) -> None:
    from nin.inference.trained import load_trained

    checkpoint, weights = exported
    original = load_trained(checkpoint)
    loaded = load_weights(weights, data_dir=data_root())
    zca, zca_loaded = original.preprocess.steps[1], loaded.preprocess.steps[1]
    torch.testing.assert_close(zca_loaded.whitening, zca.whitening, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(zca_loaded.mean, zca.mean)
    with torch.no_grad():
        torch.testing.assert_close(loaded.preprocessed()(_raw_batch()), original.preprocessed()(_raw_batch()),
                                   rtol=1e-4, atol=1e-4)
    assert len(list(private_cache.glob("*.safetensors"))) == 1


def test_the_second_use_reads_the_cache_not_the_images(exported, tmp_path, monkeypatch) -> None:
    _, weights = exported
    first = load_weights(weights, data_dir=data_root()).preprocess.steps[1].whitening

    def no_data(*args, **kwargs):
        raise AssertionError("the images were read again")

    monkeypatch.setattr("nin.inference.refit.load_dataset", no_data)
    assert torch.equal(load_weights(weights, data_dir=tmp_path).preprocess.steps[1].whitening, first)


def test_a_damaged_cache_is_fitted_again(exported, private_cache) -> None:
    _, weights = exported
    first = load_weights(weights, data_dir=data_root()).preprocess.steps[1].whitening
    (cached,) = private_cache.glob("*.safetensors")
    cached.write_bytes(b"not a safetensors file")
    assert torch.equal(load_weights(weights, data_dir=data_root()).preprocess.steps[1].whitening, first)
    assert load_file(cached)  # written again, whole


def test_other_steps_on_the_same_images_get_their_own_fit(exported, tmp_path) -> None:
    _, weights = exported
    other = tmp_path / "other.safetensors"
    export_checkpoint(_checkpoint(tmp_path, filter_bias=1.0), "safetensors", other, refit_preprocess=True,
                      data_dir=data_root())
    zca_a = load_weights(weights, data_dir=data_root()).preprocess.steps[1]
    zca_b = load_weights(other, data_dir=data_root()).preprocess.steps[1]
    assert zca_b.filter_bias == 1.0
    assert not torch.allclose(zca_a.whitening, zca_b.whitening, rtol=1e-2)


def _edited(weights: Path, folder: Path, **fit: str) -> Path:
    """A copy of the weights whose sidecar records other images."""
    sidecar = json.loads(weights.with_suffix(".json").read_text())
    sidecar["preprocess_fit"].update(fit)
    copy = folder / weights.name
    copy.write_bytes(weights.read_bytes())
    copy.with_suffix(".json").write_text(json.dumps(sidecar))
    return copy


def test_images_other_than_the_trained_ones_are_refused(exported, tmp_path, private_cache) -> None:
    _, weights = exported
    # the first 10,000 training images instead of the last: same dataset and size, other pixels
    wrong = _edited(weights, tmp_path, split="train")
    with pytest.raises(RefitError, match=r"mnist 'train' images.*differ from the ones it was trained with.*"
                                         r"official mnist: pass its folder as data_dir="):
        load_weights(wrong, data_dir=data_root())
    assert not list(private_cache.glob("*"))  # nothing fitted, nothing cached


def test_missing_images_name_the_dataset_and_the_option(exported, tmp_path, capsys) -> None:
    _, weights = exported
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RefitError, match=r"fitted on first use from the mnist 'valid' images, and they cannot be "
                                         r"loaded from .*empty: fetch them with nin.data.download_dataset\('mnist', "
                                         r"root\) and pass that folder as data_dir= \(or set \$NIN_DATA\)$") as err:
        load_weights(weights, data_dir=empty)
    assert "download=True" not in str(err.value)  # load_dataset's option, not load_weights'
    image = tmp_path / "digit.png"
    _write_png(image)
    assert main(["predict", str(weights), str(image), "--data-dir", str(empty)]) == 2
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and "mnist 'valid'" in message and "--data-dir" in message


def _write_png(path: Path) -> None:
    from PIL import Image

    Image.fromarray(mnist("test").images[0, 0].numpy()).save(path)


def test_cli_predict_refits_from_data_dir(exported, tmp_path, capsys) -> None:
    checkpoint, weights = exported
    image = tmp_path / "digit.png"
    _write_png(image)

    def top_k(source: Path, *options: str) -> list[dict]:
        assert main(["predict", str(source), str(image), "--json", *options]) == 0
        return json.loads(capsys.readouterr().out)[0]["top_k"]

    from_weights, from_checkpoint = top_k(weights, "--data-dir", str(data_root())), top_k(checkpoint)
    assert [p["class"] for p in from_weights] == [p["class"] for p in from_checkpoint]
    assert [p["probability"] for p in from_weights] == pytest.approx([p["probability"] for p in from_checkpoint],
                                                                     abs=1e-4)


def test_export_refuses_images_that_do_not_give_the_trained_fit(tmp_path) -> None:
    # the network's ZCA was fitted on 2,000 of the images its recipe names: a refit on all of them differs
    checkpoint = _checkpoint(tmp_path, fit_images=mnist(FIT_SPLIT).images[:2000])
    out = tmp_path / "net.safetensors"
    with pytest.raises(WeightsError, match=r"differs from the one it was trained with.*not its training images"):
        export_checkpoint(checkpoint, "safetensors", out, refit_preprocess=True, data_dir=data_root())
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_refit_is_refused_where_it_means_nothing(tmp_path, capsys) -> None:
    from _checkpoints import synthetic_checkpoint

    unit = synthetic_checkpoint(tmp_path)  # pixels / 255: nothing fitted
    with pytest.raises(WeightsError, match="has nothing fitted to leave out; export it with refit_preprocess=False"):
        export_checkpoint(unit, "safetensors", tmp_path / "unit.safetensors", refit_preprocess=True)
    assert main(["export", str(unit), "--format", "onnx", "--refit-preprocess"]) == 2
    assert "--refit-preprocess is for --format safetensors" in capsys.readouterr().err
    with pytest.raises(ExportError, match="for safetensors weights made from a checkpoint"):
        export_checkpoint(unit, "torchscript", refit_preprocess=True)


def test_a_sidecar_with_a_malformed_fit_record_is_refused(exported, tmp_path) -> None:
    _, weights = exported
    sidecar = json.loads(weights.with_suffix(".json").read_text())
    sidecar["preprocess_fit"] = {"dataset": "mnist"}
    (tmp_path / "bad.safetensors").write_bytes(weights.read_bytes())
    (tmp_path / "bad.json").write_text(json.dumps(sidecar))
    with pytest.raises(WeightsError, match="preprocess_fit must name the dataset, split, images_sha256"):
        read_weights(tmp_path / "bad.json")


def test_weights_with_their_tensors_never_touch_the_data(tmp_path, monkeypatch) -> None:
    # the ordinary export keeps the fitted tensors; loading needs no images and writes no cache
    checkpoint = _checkpoint(tmp_path)
    full = tmp_path / "full.safetensors"
    export_checkpoint(checkpoint, "safetensors", full)
    monkeypatch.setattr("nin.inference.refit.load_dataset", lambda *a, **k: pytest.fail("read images"))
    assert read_weights(full).preprocess_fit is None
    assert load_weights(full).preprocess.fitted
