"""Your own images: a folder of class folders, trained end to end from real Fashion-MNIST PNG/JPEG files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _checkpoints import data_root
from PIL import Image

from nin.checkpoint import load_checkpoint
from nin.cli import main
from nin.data import DatasetError, load_dataset
from nin.data.folder import class_files, held_out
from nin.train import RecipeError, apply_overrides, load_recipe

CLASSES = ["Bag", "Sneaker", "T-shirt-top", "Trouser"]  # Fashion-MNIST labels 8, 7, 0, 1 (a slash is no file name)
PER_CLASS = 20


def _photos(folder: Path) -> Path:
    """80 real Fashion-MNIST test images as files of mixed sizes and formats, under class folders."""
    root = data_root()
    if not (root / "fashion-mnist").is_dir():
        pytest.skip(f"needs the Fashion-MNIST files in {root / 'fashion-mnist'}")
    test = load_dataset("fashion-mnist", "test", root=root)
    for name, label in zip(CLASSES, (8, 7, 0, 1)):
        (folder / name).mkdir(parents=True)
        for i, index in enumerate(torch.nonzero(test.labels == label).flatten()[:PER_CLASS].tolist()):
            image = Image.fromarray(test.images[index, 0].numpy())
            if i % 3 == 1:  # mixed sizes: a wider, larger copy
                image.resize((56, 42)).save(folder / name / f"{i:03d}.png")
            elif i % 3 == 2:
                image.convert("RGB").save(folder / name / f"{i:03d}.jpg", quality=95)
            else:
                image.save(folder / name / f"{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the photo folder, a one-epoch `nin train --recipe folder-fast` run on it)."""
    tmp = tmp_path_factory.mktemp("folder")
    photos = _photos(tmp / "photos")
    out = tmp / "run"
    assert main(["train", "--recipe", "folder-fast", "--data-dir", str(photos), "--out", str(out), "--epochs", "1",
                 "--set", "augment_flip=false"]) == 0
    return photos, out


def test_a_folder_run_keeps_class_names_and_the_input_size(run: tuple[Path, Path]) -> None:
    photos, out = run
    state = load_checkpoint(out / "last.pt")
    assert state["classes"] == CLASSES and state["dataset"] == "folder" and state["input_size"] == [3, 32, 32]
    assert state["data"]["root"] == str(photos.resolve())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train_images"] == 4 * 18  # 10% of 20, that is 2 per class, held out
    assert summary["data"]["root"] == str(photos.resolve()) and summary["data"]["eval_split"] == "valid"


def test_preprocessing_is_fitted_on_the_training_part_only(run: tuple[Path, Path]) -> None:
    photos, out = run
    mean = load_checkpoint(out / "last.pt")["preprocess"]["steps"][1]["mean"].flatten()
    train = load_dataset("folder", "train", root=photos).images.double() / 255
    everything = load_dataset("folder", "train+valid", root=photos).images.double() / 255
    torch.testing.assert_close(mean.double(), train.mean(dim=(0, 2, 3)), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(mean.double(), everything.mean(dim=(0, 2, 3)), rtol=1e-5, atol=1e-6)


def test_predict_prints_the_folder_names(run: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    photos, out = run
    assert main(["predict", str(out / "last.pt"), str(photos / "Trouser" / "000.png"), "--top-k", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sorted(line.split("%")[1].strip() for line in lines[1:]) == sorted(CLASSES)


def test_eval_and_explain_find_the_folder_the_run_recorded(run: tuple[Path, Path], capsys: pytest.CaptureFixture,
                                                            monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _, out = run
    monkeypatch.setenv("NIN_DATA", str(tmp_path / "elsewhere"))
    monkeypatch.chdir(tmp_path)
    assert main(["eval", str(out / "last.pt"), "--split", "valid", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 8 and set(result["per_class_accuracy"]) <= set(CLASSES)
    assert main(["explain", str(out / "last.pt"), "--split", "valid", "--n", "2"]) == 0
    assert capsys.readouterr().out.split() == [str(out / "explain" / "explain-000.png")]  # the run's folder
    assert not (tmp_path / "explain").exists()


def test_the_held_out_split_is_a_tenth_of_each_class_and_stable(tmp_path: Path) -> None:
    counts = {"a": 2, "b": 10, "c": 25}
    picks = {name: held_out(name, n) for name, n in counts.items()}
    assert {name: len(p) for name, p in picks.items()} == {"a": 1, "b": 1, "c": 3}  # 10%, rounded up
    assert all(p == sorted(set(p)) and max(p) < counts[name] for name, p in picks.items())
    assert picks["c"] == held_out("c", 25) and held_out("d", 25) != picks["c"]  # set by the class's name
    for name, n in counts.items():
        (tmp_path / name).mkdir()
        for i in range(n):
            Image.fromarray(np.full((4, 4), i, dtype=np.uint8)).save(tmp_path / name / f"{i:02d}.png")
    splits = {s: load_dataset("folder", s, root=tmp_path, image_size=4) for s in ("train", "valid", "train+valid")}
    assert len(splits["valid"]) == 5 and len(splits["train"]) == 32 and len(splits["train+valid"]) == 37
    ids = {s: {(int(y), int(x[0, 0, 0])) for x, y in zip(d.images, d.labels)} for s, d in splits.items()}
    assert ids["train"].isdisjoint(ids["valid"]) and ids["train"] | ids["valid"] == ids["train+valid"]
    assert ids["valid"] == {(label, i) for label, name in enumerate(counts) for i in picks[name]}


def test_mixed_sizes_are_cover_resized_and_centre_cropped_to_rgb(tmp_path: Path) -> None:
    for name in ("grey", "wide"):
        (tmp_path / name).mkdir()
    wide = np.zeros((8, 24, 3), dtype=np.uint8)  # height 8, width 24: red left third, white middle, blue right
    wide[:, :8, 0] = 255
    wide[:, 8:16] = 255
    wide[:, 16:, 2] = 255
    for i in range(2):
        Image.fromarray(wide).save(tmp_path / "wide" / f"{i}.png")
        Image.fromarray(np.full((16, 16), 100, dtype=np.uint8)).save(tmp_path / "grey" / f"{i}.png")
    data = load_dataset("folder", "train+valid", root=tmp_path, image_size=8)
    assert data.images.shape == (4, 3, 8, 8) and data.classes == ["grey", "wide"]
    assert (data.images[:2] == 100).all()  # grey: halved, three equal channels
    assert (data.images[2:] == 255).all()  # wide: already 8 high, so only its white middle third is kept


@pytest.mark.parametrize("layout, message", [
    ({}, "holds no class folders"),
    ({"cat": ["a.png", "b.png"]}, "holds one class folder (cat): a classifier needs at least two classes"),
    ({"cat": ["a.png", "b.png"], "dog": ["notes.txt"]}, "dog holds no PNG or JPEG files (it has 1 other files"),
    ({"cat": ["a.png", "b.png"], "dog": ["a.png"]}, "dog holds one image: each class needs at least two"),
    ({"cat": ["a.png", "b.png"], "dog": ["a.png", "broken.jpg"]}, "broken.jpg: not an image Pillow can read"),
])
def test_folders_that_make_no_classifier_are_refused_by_name(tmp_path: Path, layout: dict, message: str) -> None:
    for folder, files in layout.items():
        (tmp_path / folder).mkdir()
        for file in files:
            if file.endswith(".png"):
                Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(tmp_path / folder / file)
            else:
                (tmp_path / folder / file).write_bytes(b"not an image")
    with pytest.raises(DatasetError) as err:
        load_dataset("folder", "train+valid", root=tmp_path)
    assert message in str(err.value)


def test_the_cli_asks_for_the_folder_and_recipes_refuse_image_size_elsewhere(tmp_path: Path,
                                                                               capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "--recipe", "folder-fast", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "give it with --data-dir PATH" in err and "root=" not in err and len(err.splitlines()) == 1
    with pytest.raises(RecipeError, match="image_size = 64 is for dataset = \"folder\""):
        apply_overrides(load_recipe("mnist"), ["image_size=64"])
    with pytest.raises(DatasetError, match="is not a folder"):
        class_files(tmp_path / "missing")
