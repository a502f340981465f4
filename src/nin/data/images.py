"""Image files to network inputs: the one rule that `nin predict`, `nin explain` and the folder dataset share.

1. decode the file with Pillow and bring its samples to 8 bits, the range of the training images:
   16-bit samples keep their high byte (v // 256; Pillow does this itself for colour), 32-bit integer
   samples must lie in 0..65535 and are taken as 16-bit, float samples must lie in 0..1 and become
   round(255 v); anything outside those ranges (or NaN) is refused, never clipped;
2. convert it to the network's channel count: mode ``L`` for one channel (ITU-R 601-2 luma), ``RGB``
   for three (an alpha channel is dropped, a palette expanded);
3. resize it, keeping its aspect ratio, so that it just covers the input size (for a square input,
   the shorter side becomes the input size), with Pillow's bilinear filter;
4. cut the centre crop of the input size (offsets rounded down).

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
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


class ImageFileError(NinError, ValueError):
    """An image file that cannot be used; the message names the file and says why."""


class PixelRangeError(ValueError):
    """Pixel values outside the range that the rule can scale to 0..255 without clipping."""


def _mode(channels: int) -> str:
    if channels not in _MODES:
        raise NinError(f"cannot feed a {channels}-channel network from image files; only 1 (grey) or 3 (RGB)")
    return _MODES[channels]


def to_8bit(image: Image.Image) -> Image.Image:
    """``image`` with 8-bit samples by the module's rule (step 1): a 16-bit grey PNG would otherwise reach the
    network clipped at 255, a 30% grey as pure white. 8-bit and palette images come back unchanged."""
    if image.mode not in (*_SIXTEEN_BIT, "I", "F"):
        return image
    values = np.asarray(image)
    if image.mode == "F":
        if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
            raise PixelRangeError(f"its float pixels range from {np.nanmin(values):g} to {np.nanmax(values):g}"
                                  f"{' with NaN' if np.isnan(values).any() else ''}; nin reads float images as 0 "
                                  "(black) to 1 (white): scale it so, or save it as an 8- or 16-bit PNG")
        return Image.fromarray(np.floor(values.astype(np.float64) * 255 + 0.5).astype(np.uint8))
    if values.min() < 0 or values.max() > 65535:
        raise PixelRangeError(f"its 32-bit pixels range from {values.min()} to {values.max()}; nin reads integer "
                              "images as 16-bit, 0 to 65535: save it as an 8- or 16-bit PNG")
    return Image.fromarray((values.astype(np.int64) >> 8).astype(np.uint8))


def fit_image(image: Image.Image, channels: int, height: int, width: int) -> torch.Tensor:
    """A Pillow image as uint8 (C, H, W) by the module's rule: to 8 bits, convert, cover-resize, centre-crop."""
    image = to_8bit(image).convert(_mode(channels))
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
    if path.is_dir():
        raise ImageFileError(f"{path}: a folder, not an image file; give the image files in it (e.g. {path}/*.png)")
    if not path.exists():
        raise ImageFileError(f"{path}: no such file")
    try:
        with Image.open(path) as image:
            image.load()  # decode now, so a truncated file fails here and not later
            return fit_image(image, *input_size)
    except UnidentifiedImageError:
        raise ImageFileError(f"{path}: not an image Pillow can read (expected PNG or JPEG)") from None
    except PixelRangeError as err:
        raise ImageFileError(f"{path}: {err}") from None
    except PermissionError as err:
        raise ImageFileError(f"{path}: cannot read it ({err.strerror}); check its permissions") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ImageFileError(f"{path}: cannot decode or convert the image ({err}); the file is damaged, "
                             "truncated or in an unusual mode") from None
