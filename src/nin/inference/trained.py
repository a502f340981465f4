"""A trained network rebuilt from a checkpoint, with the preprocessing it was trained with."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nin.data import Pipeline
from nin.models import create_model
from nin.checkpoint import CheckpointError, load_checkpoint


@dataclass
class TrainedModel:
    model: nn.Module
    preprocess: Pipeline
    classes: list[str]
    dataset: str
    input_size: tuple[int, int, int]
    recipe: dict[str, Any]
    history: list[dict[str, Any]]

    def check_images(self, images: torch.Tensor, what: str) -> None:
        """Refuse images of another size or channel count than the network was trained on."""
        if tuple(images.shape[1:]) != tuple(self.input_size):
            c, h, w = self.input_size
            raise CheckpointError(
                f"this network was trained on {c}×{h}×{w} images ({self.dataset}), but {what} holds "
                f"{'×'.join(map(str, images.shape[1:]))} images: evaluate it on data like its training data")

    @torch.no_grad()
    def logits(self, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """Logits for uint8 images (N, C, H, W) of the training size, preprocessed as in training."""
        device = next(self.model.parameters()).device
        outs = [self.model(self.preprocess(chunk).to(device)).float().cpu() for chunk in images.split(batch_size)]
        return torch.cat(outs) if outs else torch.empty(0, len(self.classes))


def load_trained(path: str | os.PathLike, device: str | torch.device = "cpu") -> TrainedModel:
    """Rebuild the model of a ``nin train`` checkpoint in eval mode."""
    state = load_checkpoint(path)
    try:
        model = create_model(state["model_name"], num_classes=len(state["classes"]), **state["model_args"])
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError, TypeError) as err:
        raise CheckpointError(f"checkpoint {path} does not fit its model {state.get('model_name')!r}: {err}") from None
    return TrainedModel(model.to(device).eval(), Pipeline.from_state_dict(state["preprocess"]), list(state["classes"]),
                        state["dataset"], tuple(state["input_size"]), state["recipe"], list(state["history"]))
