"""A trained network rebuilt from a checkpoint, with the preprocessing it was trained with."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nin.checkpoint import CheckpointError, load_checkpoint, require_finite
from nin.data import SPLITS, DatasetError, LabeledImages, Pipeline, load_dataset, run_root
from nin.models import create_model


class Preprocessed(nn.Module):
    """A network with its fitted preprocessing in front: raw pixel values (0..255) in, logits out.

    What prediction, torch.hub, shipped weights and export see, so none of them can forget the
    preprocessing or apply another one than training did. ``class_maps`` gives the class confidence
    maps of networks that have them.
    """

    def __init__(self, preprocess: Pipeline, network: nn.Module, input_size: tuple[int, int, int],
                 classes: list[str] | None = None) -> None:
        super().__init__()
        self.preprocess = preprocess
        self.network = network
        self.input_size = tuple(input_size)
        self.classes = list(classes) if classes is not None else None  # the names of the outputs, in order

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(self.preprocess(images))

    def class_maps(self, images: torch.Tensor) -> torch.Tensor:
        return self.network.class_maps(self.preprocess(images))


@dataclass
class TrainedModel:
    """A trained network as a card: the module, the registered name and arguments that rebuild it, its fitted
    preprocessing, its classes, and the recipe and history that produced it."""

    model: nn.Module
    model_name: str
    model_args: dict[str, Any]
    preprocess: Pipeline
    classes: list[str]
    dataset: str
    input_size: tuple[int, int, int]
    recipe: dict[str, Any]
    history: list[dict[str, Any]]
    data: dict[str, Any] | None = None  # what the run recorded of its data (root, splits); None before it did

    def load_split(self, split: str, data_dir: str | os.PathLike | None = None) -> LabeledImages:
        """A split of the data this network was trained on: from ``data_dir``, else from the root its run
        recorded while that folder exists (else ``$NIN_DATA``, else the cache); a folder dataset's files are
        fitted to the network's input size. A network from elsewhere may name no dataset nin can load, and is
        then refused with what to use instead."""
        if self.dataset not in SPLITS:
            raise DatasetError(f"this network was trained on {self.dataset!r}, which is not a dataset nin can load "
                               f"({', '.join(SPLITS)}); give it image files instead (nin predict, nin explain)")
        if split not in SPLITS[self.dataset]:
            raise DatasetError(f"this network was trained on {self.dataset!r}, which has no split {split!r}; "
                               f"its splits: {', '.join(SPLITS[self.dataset])}")
        recorded = (self.data or {}).get("root")
        size = self.input_size[-1] if self.dataset == "folder" else None
        root = run_root(data_dir, recorded)
        try:
            return load_dataset(self.dataset, split, root=root, image_size=size)
        except DatasetError as err:
            if root is not None or recorded is None:
                raise
            note = f" (the run was trained on data under {recorded}, which no longer exists)"
            raise DatasetError(f"{err}{note}", cli=f"{err.cli}{note}") from None

    def check_images(self, images: torch.Tensor, what: str) -> None:
        """Refuse images of another size or channel count than the network was trained on."""
        if tuple(images.shape[1:]) != tuple(self.input_size):
            c, h, w = self.input_size
            raise CheckpointError(
                f"this network was trained on {c}×{h}×{w} images ({self.dataset}), but {what} holds "
                f"{'×'.join(map(str, images.shape[1:]))} images: evaluate it on data like its training data")

    def preprocessed(self) -> Preprocessed:
        """The network with its preprocessing in front (raw 0..255 pixels in), in eval mode."""
        return Preprocessed(self.preprocess, self.model, self.input_size, self.classes).eval()

    @torch.no_grad()
    def logits(self, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """Logits for uint8 images (N, C, H, W) of the training size, preprocessed as in training."""
        model = self.preprocessed()
        device = next(self.model.parameters()).device
        outs = [model(chunk.to(device)).float().cpu() for chunk in images.split(batch_size)]
        return torch.cat(outs) if outs else torch.empty(0, len(self.classes))


def load_trained(path: str | os.PathLike, device: str | torch.device = "cpu") -> TrainedModel:
    """Rebuild the model of a ``nin train`` checkpoint in eval mode."""
    return trained_from_state(load_checkpoint(path), path, device)


def trained_from_state(state: dict[str, Any], path: str | os.PathLike,
                       device: str | torch.device = "cpu") -> TrainedModel:
    """The model of a loaded checkpoint ``state`` (read from ``path``, named in errors), in eval mode.

    Everything is checked before use: the weights and the preprocessing statistics must be finite, and the
    class names, dataset name and input size must be of their kind and fit the network.
    """
    require_finite(state, path, ("model", "preprocess"))
    try:
        model = create_model(state["model_name"], num_classes=len(state["classes"]), **state["model_args"])
        model.load_state_dict(state["model"])
        model.eval()
        preprocess = Pipeline.from_spec(state["preprocess"])
    except (KeyError, RuntimeError, TypeError, ValueError, AttributeError) as err:
        raise CheckpointError(f"checkpoint {path} does not fit its model {state.get('model_name')!r}: {err}") from None
    input_size = check_input_size(model, state.get("input_size"), f"checkpoint {path}")
    classes, dataset = state.get("classes"), state.get("dataset")
    if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes) and isinstance(dataset, str)):
        raise CheckpointError(f"checkpoint {path} has damaged metadata: classes {classes!r}, dataset {dataset!r}; "
                              "use the checkpoint as `nin train` wrote it")
    return TrainedModel(model.to(device), state["model_name"], dict(state["model_args"]), preprocess.to(device),
                        list(classes), dataset, input_size, state.get("recipe", {}), list(state.get("history", [])),
                        state.get("data"))


def check_input_size(model: nn.Module, size: Any, source: str) -> tuple[int, int, int]:
    """``size`` as (C, H, W) if it is three positive integers that ``model`` accepts, else a CheckpointError.

    The network is run on an empty image of that size on the meta device: shapes only, no arithmetic.
    """
    if not (isinstance(size, (list, tuple)) and len(size) == 3
            and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in size)):
        raise CheckpointError(f"{source} gives the input size {size!r}; it must be [channels, height, width], three "
                              "positive integers")
    weights = {name: t.to("meta") for name, t in model.state_dict().items()}
    try:
        torch.func.functional_call(model, weights, (torch.zeros(1, *size, device="meta"),))
    except RuntimeError as err:
        raise CheckpointError(f"{source} gives the input size {'×'.join(map(str, size))}, which its network "
                              f"{type(model).__name__} does not accept ({str(err).splitlines()[0]})") from None
    return tuple(size)
