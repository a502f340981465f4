"""nin predict: the documented resize rule, the checkpoint's preprocessing, and per-file errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _checkpoints import synthetic_checkpoint, synthetic_digits
from PIL import Image

from nin.cli import main
from nin.inference.predict import ImageFileError, fit_image, predict_files, read_image
from nin.inference.trained import load_trained


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return synthetic_checkpoint(tmp_path_factory.mktemp("predict"))


def _png(path, array: np.ndarray) -> str:
    Image.fromarray(array).save(path)
    return str(path)


def test_image_of_the_input_size_is_used_pixel_for_pixel(checkpoint, tmp_path) -> None:
    trained = load_trained(checkpoint)
    digits = synthetic_digits(2, seed=5)[0]
    paths = [_png(tmp_path / f"{i}.png", d[0].numpy()) for i, d in enumerate(digits)]
    predictions, errors = predict_files(trained, paths, k=10)
    assert errors == []
    expected = trained.logits(digits).softmax(1)
    for p, probs in zip(predictions, expected):
        assert p.probabilities == pytest.approx(probs[p.indices].tolist(), abs=1e-6)
        assert p.probabilities == sorted(p.probabilities, reverse=True)


def test_shorter_side_is_resized_then_centre_cropped() -> None:
    wide = np.zeros((50, 100, 3), dtype=np.uint8)  # height 50, width 100: black sides, white middle
    wide[:, 20:80] = 255
    out = fit_image(Image.fromarray(wide), 1, 28, 28)
    assert out.shape == (1, 28, 28) and out.dtype == torch.uint8
    assert (out == 255).all()  # 100×50 → 56×28; the centre 28 columns (14..41) lie in the white 11..44


def test_grey_image_feeds_a_colour_network_and_back() -> None:
    grey = Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64).astype(np.uint8))
    rgb = fit_image(grey, 3, 32, 32)
    assert rgb.shape == (3, 32, 32) and torch.equal(rgb[0], rgb[1]) and torch.equal(rgb[1], rgb[2])
    colour = Image.fromarray(np.full((40, 30, 3), (255, 0, 0), dtype=np.uint8))
    assert fit_image(colour, 1, 28, 28).unique().tolist() == [76]  # ITU-R 601-2 luma of pure red


def test_jpeg_of_any_size_is_accepted(tmp_path) -> None:
    path = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (123, 77, 3), dtype=np.uint8)).save(path)
    assert read_image(path, (1, 28, 28)).shape == (1, 28, 28)


@pytest.mark.parametrize("content, reason", [(b"not an image at all", "not an image"),
                                             (None, "no such file"), ("truncated", "damaged, truncated")])
def test_unreadable_files_raise_an_error_naming_them(tmp_path, content, reason) -> None:
    path = tmp_path / "bad.png"
    if content == "truncated":
        _png(path, np.full((64, 64), 200, dtype=np.uint8))
        path.write_bytes(path.read_bytes()[:60])
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageFileError, match=reason) as err:
        read_image(path, (1, 28, 28))
    assert str(path) in str(err.value)


def test_cli_answers_the_good_files_and_fails_on_the_bad(checkpoint, tmp_path, capsys) -> None:
    good = _png(tmp_path / "good.png", synthetic_digits(1)[0][0, 0].numpy())
    bad = tmp_path / "bad.jpg"
    bad.write_text("hello")
    missing = tmp_path / "missing.png"
    assert main(["predict", str(checkpoint), str(bad), good, str(missing), "--top-k", "3"]) == 2
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == good and len(out.splitlines()) == 4
    errors = err.strip().splitlines()
    assert len(errors) == 2 and str(bad) in errors[0] and str(missing) in errors[1]

    assert main(["predict", str(checkpoint), good, "--json", "--top-k", "20"]) == 0
    (answer,) = json.loads(capsys.readouterr().out)
    assert answer["file"] == good and len(answer["top_k"]) == 10  # capped at the number of classes
    assert sum(c["probability"] for c in answer["top_k"]) == pytest.approx(1.0, abs=1e-5)
