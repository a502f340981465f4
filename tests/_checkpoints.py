"""Small real checkpoints for the explain / predict / export / hub tests, made without the training loop.

``checkpoint_state`` builds an (untrained, seeded) ``nin_mnist`` network, fits a preprocessing
pipeline on the given images and returns a dict with the keys ``Trainer.checkpoint_state`` writes,
so ``nin.inference.trained.load_trained`` reads it like a real one. Training is left out on purpose: a few
dozen CPU steps take longer than all these tests together and still leave the network at chance.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from nin.checkpoint import save_checkpoint
from nin.data import LabeledImages, build_pipeline, load_dataset
from nin.models import create_model
from nin.train.recipe import load_recipe

DIGITS = [str(d) for d in range(10)]
# He init keeps an untrained network's logits far from zero (the authors' std 0.05 gives ~1e-4 on [0, 1] pixels),
# so comparisons of outputs mean something
MODEL_ARGS = {"init_std": "he"}


def data_root() -> Path:
    """The shared data folder: ``$NIN_DATA``, else ``../shared/data`` beside the repository."""
    return Path(os.environ.get("NIN_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")


@functools.cache
def mnist(split: str) -> LabeledImages:
    """A real MNIST split, or a skipped test when the shared data is not on this machine."""
    if not (data_root() / "mnist").is_dir():
        pytest.skip(f"needs the MNIST files in {data_root() / 'mnist'} (set NIN_DATA to the shared data folder)")
    return load_dataset("mnist", split, root=data_root())


def synthetic_digits(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random uint8 images (n, 1, 28, 28) and labels, for tests that need no real data."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g)
    return images, torch.randint(0, 10, (n,), generator=g)


def checkpoint_state(images: torch.Tensor, preprocess: Sequence[Any] = ("unit",), seed: int = 0) -> dict[str, Any]:
    """The dict a ``nin train`` checkpoint holds, for a seeded untrained ``nin_mnist``."""
    torch.manual_seed(seed)
    pipeline = build_pipeline(list(preprocess)).fit(images)
    model = create_model("nin_mnist", num_classes=10, **MODEL_ARGS).eval()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    recipe = dataclasses.replace(load_recipe("mnist"), preprocess=list(preprocess), epochs=1)
    return {
        "model_name": "nin_mnist",
        "model_args": dict(MODEL_ARGS),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "schedule": {},
        "scaler": {},
        "rng": {"torch": torch.get_rng_state()},
        "epoch": 1,
        "elapsed": 0.0,
        "history": [],
        "preprocess": pipeline.to_spec(),
        "recipe": dataclasses.asdict(recipe),
        "classes": list(DIGITS),
        "dataset": "mnist",
        "input_size": list(images.shape[1:]),
    }


def mnist_checkpoint(folder: Path, preprocess: tuple[str, ...] = ("unit",)) -> Path:
    """A checkpoint whose preprocessing is fitted on 1,000 real MNIST training images."""
    path = folder / f"mnist-{'-'.join(preprocess)}.pt"
    save_checkpoint(path, checkpoint_state(mnist("valid").images[:1000], preprocess))
    return path


@functools.cache
def _synthetic_state(preprocess: tuple[str, ...]) -> dict[str, Any]:
    # 1,024 images, more than the 784 pixels: with fewer, ZCA's covariance is rank-deficient and
    # its eigendecomposition takes seconds instead of a fraction of one
    return checkpoint_state(synthetic_digits(1024)[0], preprocess)


def synthetic_checkpoint(folder: Path, preprocess: tuple[str, ...] = ("unit",)) -> Path:
    """An untrained nin_mnist checkpoint fitted on random images: for tests that need no real data."""
    path = folder / f"synthetic-{'-'.join(preprocess)}.pt"
    save_checkpoint(path, _synthetic_state(preprocess))
    return path
