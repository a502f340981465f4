"""A run's data: the splits of its recipe, the preprocessing fitted on the training split (or restored from a
checkpoint), and the preprocessed images resident on the training device."""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nin.data import Augment, DeviceLoader, LabeledImages, Pipeline, build_pipeline, load_dataset, resolve_root
from nin.inference.evaluate import resident_dtype
from nin.train.health import TrainingError
from nin.train.recipe import Recipe
from nin.utils.distributed import World


@dataclass
class TrainingData:
    """Everything the loop reads: the training split and its loader, the split evaluated after each epoch."""

    recipe: Recipe
    root: str | Path | None
    device: torch.device
    train: LabeledImages
    preprocess: Pipeline
    loader: DeviceLoader
    held_out: tuple[torch.Tensor, torch.Tensor] | None  # the recipe's eval_split, preprocessed, on the device

    @property
    def classes(self) -> list[str]:
        return list(self.train.classes)

    @property
    def input_size(self) -> list[int]:
        return list(self.train.images.shape[1:])

    def load(self, split: str) -> LabeledImages:
        return load_recipe_split(self.recipe, split, self.root)

    def record(self) -> dict[str, Any]:
        """What the checkpoint and the summary keep of the data, so `nin eval / explain / check` find it again:
        the absolute root it was read from and the recipe's splits."""
        return {"dataset": self.recipe.dataset, "root": str(resolve_root(self.root).resolve()),
                "train_split": self.recipe.train_split, "train": self.train.description,
                "eval_split": self.recipe.eval_split, "test_splits": list(self.recipe.test_splits)}

    def prepare(self, data: LabeledImages) -> tuple[torch.Tensor, torch.Tensor]:
        """A split preprocessed as in training, in the resident dtype, on the device."""
        images = finite_images(data, self.preprocess, self.recipe)
        return images.to(self.device, resident_dtype(self.recipe.precision)), data.labels.to(self.device)


def load_recipe_split(recipe: Recipe, split: str, root: str | Path | None) -> LabeledImages:
    """One split of the recipe's dataset (a folder dataset's files fitted to the recipe's image_size)."""
    return load_dataset(recipe.dataset, split, root=root, image_size=recipe.image_size)


def load_training_data(recipe: Recipe, root: str | Path | None, device: torch.device, world: World,
                       preprocess_spec: dict[str, Any] | None = None, verbose: bool = True) -> TrainingData:
    """Load the recipe's splits, fit the preprocessing on the training split (or restore ``preprocess_spec``,
    on a resume) and put the preprocessed training images on the device behind a shuffling loader."""
    def load(role: str, split: str) -> LabeledImages:
        data = load_recipe_split(recipe, split, root)
        if verbose:
            print(f"{role}: {data.description}", file=sys.stderr)
        return data

    train = load("train", recipe.train_split)
    if recipe.subset is not None:
        train = dataclasses.replace(train, images=train.images[: recipe.subset], labels=train.labels[: recipe.subset])
    preprocess = (Pipeline.from_spec(preprocess_spec) if preprocess_spec
                  else build_pipeline(recipe.preprocess).fit(train.images))
    held_out = load("eval", recipe.eval_split) if recipe.eval_split else None
    augment = Augment(recipe.augment_pad, recipe.augment_flip, recipe.augment_mode) \
        if recipe.augment_pad or recipe.augment_flip else None
    loader = DeviceLoader(finite_images(train, preprocess, recipe).to(resident_dtype(recipe.precision)), train.labels,
                          recipe.batch_size, shuffle=True, seed=recipe.seed, rank=world.rank,
                          world_size=world.world_size, augment=augment, device=device,
                          channels_last=recipe.channels_last)
    data = TrainingData(recipe, root, device, train, preprocess, loader, None)
    data.held_out = data.prepare(held_out) if held_out is not None else None
    return data


def finite_images(data: LabeledImages, preprocess: Pipeline, recipe: Recipe) -> torch.Tensor:
    """The preprocessed images, refused if any value is NaN or Inf: training on them would only surface later
    as a 'diverged' loss that blames the learning rate."""
    x = preprocess.transform(data.images)
    bad = torch.cat([~torch.isfinite(chunk.flatten(1)).all(1) for chunk in x.split(4096)])
    if bad.any():
        raise TrainingError(
            f"{data.name} {data.split!r}: the preprocessing {recipe.preprocess} turned {int(bad.sum()):,} "
            f"of {len(x):,} images into NaN or Inf (the first is image {int(bad.nonzero()[0])}); nothing was "
            "trained. Fix the preprocessing (a zca filter_bias above 0, more images to fit it on) or the data "
            "files.")
    return x
