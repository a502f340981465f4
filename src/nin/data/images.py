"""Image files to network inputs: the one rule that `nin predict`, `nin explain` and the folder dataset share.

1. decode the file with Pillow and convert it to the network's channel count: mode ``L`` for one
   channel (ITU-R 601-2 luma), ``RGB`` for three (an alpha channel is dropped, a palette expanded);
2. resize it, keeping its aspect ratio, so that it just covers the input size (for a square input,
   the shorter side becomes the input size), with Pillow's bilinear filter;
3. cut the centre crop of the input size (offsets rounded down).

Training on a folder of your own images and predicting new ones go through the same function, so the
network never sees a file fitted one way in training and another way in use.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from nin.errors import NinError

_MODES = {1: "L", 3: "RGB"}


class ImageFileError(NinError, ValueError):
    """An image file that cannot be used; the message names the file and says why."""


def _mode(channels: int) -> str:
    if channels not in _MODES:
        raise ValueError(f"cannot feed a {channels}-channel network from image files; only 1 (grey) or 3 (RGB)")
    return _MODES[channels]


def fit_image(image: Image.Image, channels: int, height: int, width: int) -> torch.Tensor:
    """A Pillow image as uint8 (C, H, W) by the module's rule: convert, cover-resize, centre-crop."""
    image = image.convert(_mode(channels))
    scale = max(height / image.height, width / image.width)
    size = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    if size != image.size:
        image = image.resize(size, Image.BILINEAR)
    left, top = (image.width - width) // 2, (image.height - height) // 2
    image = image.crop((left, top, left + width, top + height))
    pixels = np.asarray(image, dtype=np.uint8).reshape(height, width, channels)
    return torch.from_numpy(pixels.transpose(2, 0, 1).copy())


def read_image(path: str | os.PathLike, input_size: tuple[int, int, int]) -> torch.Tensor:
    """Decode ``path`` fully and fit it to ``input_size`` (C, H, W); any failure is an ImageFileError."""
    path = Path(path)
    _mode(input_size[0])  # a network we cannot feed is the caller's error, not the file's
    if not path.is_file():
        raise ImageFileError(f"{path}: no such file")
    try:
        with Image.open(path) as image:
            image.load()  # decode now, so a truncated file fails here and not later
            return fit_image(image, *input_size)
    except UnidentifiedImageError:
        raise ImageFileError(f"{path}: not an image Pillow can read (expected PNG or JPEG)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ImageFileError(f"{path}: cannot decode or convert the image ({err}); the file is damaged, "
                             "truncated or in an unusual mode") from None
