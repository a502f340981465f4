"""A trained network rebuilt from a checkpoint, with the preprocessing it was trained with."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nin.checkpoint import CheckpointError, load_checkpoint
from nin.data import DatasetError, LabeledImages, Pipeline, load_dataset, run_root
from nin.models import create_model


class Preprocessed(nn.Module):
    """A network with its fitted preprocessing in front: raw pixel values (0..255) in, logits out.

    What prediction, torch.hub, shipped weights and export see, so none of them can forget the
    preprocessing or apply another one than training did. ``class_maps`` gives the class confidence
    maps of networks that have them.
    """

    def __init__(self, preprocess: Pipeline, network: nn.Module, input_size: tuple[int, int, int]) -> None:
        super().__init__()
        self.preprocess = preprocess
        self.network = network
        self.input_size = tuple(input_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(self.preprocess(images))

    def class_maps(self, images: torch.Tensor) -> torch.Tensor:
        return self.network.class_maps(self.preprocess(images))


@dataclass
class TrainedModel:
    model: nn.Module
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
        fitted to the network's input size."""
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
        return Preprocessed(self.preprocess, self.model, self.input_size).eval()

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
    """The model of a loaded checkpoint ``state`` (read from ``path``, named in errors), in eval mode."""
    try:
        model = create_model(state["model_name"], num_classes=len(state["classes"]), **state["model_args"])
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError, TypeError) as err:
        raise CheckpointError(f"checkpoint {path} does not fit its model {state.get('model_name')!r}: {err}") from None
    return TrainedModel(model.to(device).eval(), Pipeline.from_spec(state["preprocess"]).to(device),
                        list(state["classes"]), state["dataset"], tuple(state["input_size"]), state["recipe"],
                        list(state["history"]), state.get("data"))
