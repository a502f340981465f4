"""Class-map figures (nin explain) and the localization measure's geometry."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from _checkpoints import data_root, mnist, mnist_checkpoint, synthetic_checkpoint, synthetic_digits
from PIL import Image

from nin.cli import main
from nin.experiments.localization import chance_rates, inside, peak_hits, place_digits
from nin.inference.explain import class_maps_for, explain_figure, map_peaks, upsample
from nin.inference.trained import load_trained

CLASSES = [str(d) for d in range(10)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return load_trained(synthetic_checkpoint(tmp_path_factory.mktemp("explain")))


def test_class_maps_average_to_the_logits(trained) -> None:
    images = synthetic_digits(3)[0]
    maps = class_maps_for(trained, images)
    assert maps.shape == (3, 10, 7, 7)
    torch.testing.assert_close(maps.mean(dim=(2, 3)), trained.logits(images), rtol=1e-5, atol=1e-6)
    assert upsample(maps, (28, 28)).shape == (3, 10, 28, 28)


def test_map_peak_is_the_centre_of_the_maximal_cell() -> None:
    maps = torch.zeros(2, 7, 7)
    maps[0, 2, 5] = 1.0
    maps[1, 6, 0] = maps[1, 6, 1] = 3.0  # a tie: the first cell in row-major order wins
    assert map_peaks(maps, (28, 28)).tolist() == [[22.0, 10.0], [2.0, 26.0]]


def test_figure_shares_one_colour_scale_and_marks_true_and_predicted(trained) -> None:
    images, labels = synthetic_digits(3, seed=7)
    maps = class_maps_for(trained, images)
    fig = explain_figure(images, maps, CLASSES, labels=labels.tolist(), names=["a", "b", "c"])
    norms = {(im.norm.vmin, im.norm.vmax) for ax in fig.axes for im in ax.get_images()
             if im.get_cmap().name == "viridis"}
    assert len(norms) == 1
    big = upsample(maps, (28, 28))
    assert norms.pop() == pytest.approx((float(big.min()), float(big.max())))
    titles = [ax.get_title() for ax in fig.axes]
    predicted = maps.mean((2, 3)).argmax(1)
    for i in range(3):
        assert f"true: {labels[i].item()}" in titles[i * 12]
        assert titles[i * 12 + 1].startswith(f"pred: {predicted[i].item()}")
        assert any("true" in t for t in titles[i * 12 + 2:(i + 1) * 12])


def test_many_classes_show_the_top_maps_and_the_true_one() -> None:
    images = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    maps = torch.arange(100.0).reshape(1, 100, 1, 1).expand(1, 100, 2, 2).contiguous()
    fig = explain_figure(images, maps, [f"c{i}" for i in range(100)], labels=[3])
    titles = [ax.get_title() for ax in fig.axes[2:14]]
    assert titles[0] == "c99 (pred)" and titles[-1] == "c3 (true)"


def test_cli_explain_writes_png_figures_for_a_split(tmp_path, capsys) -> None:
    mnist("test")
    checkpoint = mnist_checkpoint(tmp_path)
    out = tmp_path / "figs"
    assert main(["explain", str(checkpoint), "--n", "3", "--out", str(out), "--data-dir", str(tmp_path / "none")]) == 2
    assert "mnist" in capsys.readouterr().err  # a missing data folder is a one-line error
    assert main(["explain", str(checkpoint), "--n", "3", "--out", str(out), "--data-dir", str(data_root())]) == 0
    (path,) = capsys.readouterr().out.split()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > image.height
    assert sorted(p.name for p in out.iterdir()) == ["explain-000.png"]


def test_cli_explain_unknown_split_is_a_one_line_error(tmp_path, capsys) -> None:
    assert main(["explain", str(synthetic_checkpoint(tmp_path)), "--split", "bogus"]) == 2
    assert "no split 'bogus'; its splits: train, valid" in capsys.readouterr().err


def test_cli_explain_takes_image_files(tmp_path, capsys) -> None:
    checkpoint = synthetic_checkpoint(tmp_path)
    files = []
    for i in range(2):
        files.append(str(tmp_path / f"digit{i}.png"))
        Image.fromarray(np.full((40, 40), 30 * i, dtype=np.uint8)).save(files[-1])
    assert main(["explain", str(checkpoint), *files, "--out", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.strip().endswith("explain-000.png")


def test_placed_digits_lie_inside_their_boxes() -> None:
    digits = torch.zeros(3, 1, 28, 28, dtype=torch.uint8)
    digits[0, 0, 5:20, 8:12] = 255
    digits[1, 0, 0, 0] = 1
    digits[2, 0, 27, :] = 9
    canvases = place_digits(digits, torch.tensor([1, 2, 3]), canvas=56, seed=0)
    assert canvases.images.shape == (3, 1, 56, 56)
    for image, box, digit in zip(canvases.images, canvases.boxes, digits):
        x0, y0, x1, y1 = box.tolist()
        assert image[0, y0:y1, x0:x1].sum() == digit.sum()  # all the ink is in the box
        assert (image[0, y0, x0:x1] > 0).any() and (image[0, y1 - 1, x0:x1] > 0).any()  # and the box is tight
        assert (image[0, y0:y1, x0] > 0).any() and (image[0, y0:y1, x1 - 1] > 0).any()
    assert torch.equal(place_digits(digits, torch.tensor([1, 2, 3]), 56, seed=0).boxes, canvases.boxes)


def test_hit_rule_and_chance_rates() -> None:
    boxes = torch.tensor([[0, 0, 28, 28], [28, 28, 56, 56]])
    points = torch.tensor([[27.9, 0.0], [28.0, 40.0]])
    assert inside(points, boxes).tolist() == [True, True]
    assert inside(torch.tensor([[28.0, 0.0], [27.9, 40.0]]), boxes).tolist() == [False, False]
    rates = chance_rates(boxes, 56, (14, 14))
    assert rates == {"box_area_share": 0.25, "cell_centre_share": 0.25}
    maps = torch.zeros(2, 14, 14)
    maps[1, 10, 10] = 1.0  # map 0 is flat: no peak, a miss even though cell (0, 0) is in box 0
    assert peak_hits(maps, boxes, (56, 56)).tolist() == [False, True]
