"""Your own images as a dataset: a folder of class folders of PNG/JPEG files (torchvision's ImageFolder layout).

    ROOT/cat/001.png, ROOT/cat/002.jpg, ..., ROOT/dog/001.jpeg, ...

The class names are the folder names, sorted; files may sit in subfolders of their class folder. Every file
goes through the rule of ``nin.data.images``, the one ``nin predict`` applies: converted to RGB, resized to
just cover ``image_size`` × ``image_size`` keeping its aspect ratio, centre-cropped. So images of mixed
sizes become one size, and a trained network sees new files exactly as it saw its training files.

``valid`` holds out 10% of each class (rounded up, at least one file), drawn with a seed made from the class
name alone: the held-out files do not depend on the training seed, on the other classes or on the machine.
``train`` is the rest and ``train+valid`` everything. Loading a split decodes only that split's files.
"""
from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np

from nin.data.formats import DatasetError
from nin.data.images import ImageFileError, read_image

FOLDER_SPLITS = ("train", "valid", "train+valid")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DEFAULT_IMAGE_SIZE = 32
VALID_FRACTION = 0.1
CHANNELS = 3  # grey files become three equal channels, so one network fits every folder


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def class_files(root: Path) -> dict[str, list[Path]]:
    """Class name -> its image files (sorted), refusing folders that cannot make a classifier."""
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder: the folder dataset reads a folder of class folders "
                           f"({root}/CLASS/IMAGE.png)")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DatasetError(f"{root} holds no class folders: put each class's PNG/JPEG files in a folder named "
                           f"after the class ({root}/cat/1.png, {root}/dog/2.jpg, ...)")
    files = {}
    for folder in folders:
        images = sorted(p for p in folder.rglob("*") if _is_image(p))
        if not images:
            others = sum(1 for p in folder.rglob("*") if p.is_file())
            note = f" (it has {others} other files; only .png, .jpg and .jpeg are read)" if others else ""
            raise DatasetError(f"class folder {folder} holds no PNG or JPEG files{note}; add images to it or "
                               "remove it")
        if len(images) < 2:
            raise DatasetError(f"class folder {folder} holds one image: each class needs at least two, one of "
                               "them held out for validation; add images to it or remove it")
        files[folder.name] = images
    if len(files) < 2:
        raise DatasetError(f"{root} holds one class folder ({folders[0].name}): a classifier needs at least two "
                           "classes; add a folder per class")
    return files


def held_out(name: str, count: int) -> list[int]:
    """Sorted indices of the ``valid`` files among a class's ``count`` sorted files."""
    k = math.ceil(VALID_FRACTION * count)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    return sorted(rng.permutation(count)[:k].tolist())


def split_files(files: dict[str, list[Path]], split: str) -> list[tuple[Path, int]]:
    """(file, label) of every file of ``split``, by class, then by file name."""
    if split not in FOLDER_SPLITS:
        raise ValueError(f"unknown split {split!r} for a folder dataset; valid splits: {', '.join(FOLDER_SPLITS)}")
    chosen = []
    for label, (name, paths) in enumerate(files.items()):
        valid = set(held_out(name, len(paths)))
        chosen += [(path, label) for i, path in enumerate(paths)
                   if split == "train+valid" or (i in valid) == (split == "valid")]
    return chosen


def read_folder(root: Path, split: str, image_size: int) -> tuple[np.ndarray, np.ndarray, list[str], str]:
    """Images (N, 3, S, S) uint8, labels, class names and a description of one split of a class-folder tree."""
    files = class_files(root)
    chosen = split_files(files, split)
    images = np.empty((len(chosen), CHANNELS, image_size, image_size), dtype=np.uint8)
    for i, (path, _) in enumerate(chosen):
        try:
            images[i] = read_image(path, (CHANNELS, image_size, image_size)).numpy()
        except ImageFileError as err:
            raise DatasetError(f"{err}; the folder dataset reads every .png, .jpg and .jpeg file under its class "
                               "folders: replace the file or remove it") from None
    labels = np.array([label for _, label in chosen], dtype=np.int64)
    part = {"train": f"all but the {VALID_FRACTION:.0%} held out per class",
            "valid": f"{VALID_FRACTION:.0%} of each class held out", "train+valid": "every file"}[split]
    what = f"{part}, fitted to {image_size}×{image_size} RGB"
    return images, labels, list(files), what
