"""Classify image files with a trained checkpoint: any PNG or JPEG, any size, grey or colour.

Each file goes through the rule of ``nin.data.images`` (decode, bring to 8 bits without clipping, convert to
the checkpoint's channel count, cover-resize, centre-crop: documented in ``docs/explain.md``), then through the checkpoint's own fitted
preprocessing (``TrainedModel.preprocess``) and the network. The folder dataset reads its training files by
the same rule, so a network sees new files as it saw its training files.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from nin.data.images import ImageFileError, fit_image, read_image
from nin.inference.trained import TrainedModel

# the image rule's names are part of the prediction API
__all__ = ["ImageFileError", "Prediction", "fit_image", "predict_files", "probabilities", "read_image", "top_k"]


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
