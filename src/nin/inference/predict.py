"""Classify image files with a trained checkpoint: any PNG or JPEG, any size, grey or colour.

The rule that turns a file into the network's input (documented in ``docs/explain.md``):

1. decode the file with Pillow and bring its samples to 8 bits, the range of the training images:
   16-bit samples keep their high byte (v // 256; Pillow does this itself for colour), 32-bit integer
   samples must lie in 0..65535 and are taken as 16-bit, float samples must lie in 0..1 and become
   round(255 v); anything outside those ranges (or NaN) is refused, never clipped;
2. convert it to the checkpoint's channel count: mode ``L`` for one channel (ITU-R 601-2 luma), ``RGB``
   for three (an alpha channel is dropped, a palette expanded);
3. resize it, keeping its aspect ratio, so that it just covers the input size (for a square input,
   the shorter side becomes the input size), with Pillow's bilinear filter;
4. cut the centre crop of the input size (offsets rounded down);
5. apply the checkpoint's own fitted preprocessing (``TrainedModel.preprocess``) and the network.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from nin.errors import NinError
from nin.inference.trained import TrainedModel

_MODES = {1: "L", 3: "RGB"}
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


class ImageFileError(NinError, ValueError):
    """An image file that cannot be used; the message names the file and says why."""


class PixelRangeError(ValueError):
    """Pixel values outside the range that the rule can scale to 0..255 without clipping."""


@dataclass(frozen=True)
class Prediction:
    """The top classes of one image, most probable first."""

    source: str
    classes: list[str]
    indices: list[int]
    probabilities: list[float]

    def to_dict(self) -> dict[str, object]:
        return {"file": self.source, "top_k": [{"class": c, "index": i, "probability": p}
                                               for c, i, p in zip(self.classes, self.indices, self.probabilities)]}


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


@torch.no_grad()
def probabilities(trained: TrainedModel, images: torch.Tensor) -> torch.Tensor:
    """Softmax over the classes for uint8 images (N, C, H, W) of the checkpoint's input size."""
    return trained.logits(images).softmax(dim=1)


def predict_files(trained: TrainedModel, paths: list[str], k: int = 5) -> tuple[list[Prediction], list[str]]:
    """Top-k predictions of every readable file, and one error message per file that failed."""
    images, sources, errors = [], [], []
    for path in paths:
        try:
            images.append(read_image(path, trained.input_size))
            sources.append(str(path))
        except ImageFileError as err:
            errors.append(str(err))
    predictions = top_k(trained, torch.stack(images), sources, k) if images else []
    # finite weights can still overflow to an infinite logit, whose softmax is NaN (and NaN sorts first in topk)
    finite = [all(math.isfinite(v) for v in p.probabilities) for p in predictions]
    errors += [f"{p.source}: the network's output for this image is not a number (its logits overflow)"
               for p, ok in zip(predictions, finite) if not ok]
    return [p for p, ok in zip(predictions, finite) if ok], errors


def top_k(trained: TrainedModel, images: torch.Tensor, sources: list[str], k: int = 5) -> list[Prediction]:
    """The ``k`` most probable classes of each image (``k`` is capped at the number of classes)."""
    if k < 1:
        raise ValueError(f"top-k must be at least 1, got {k}")
    probs = probabilities(trained, images)
    values, indices = probs.topk(min(k, probs.shape[1]), dim=1)
    return [Prediction(src, [trained.classes[i] for i in idx.tolist()], idx.tolist(), val.tolist())
            for src, val, idx in zip(sources, values, indices)]
