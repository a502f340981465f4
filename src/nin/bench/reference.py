"""The yardstick for ``nin bench``: NIN trained the way a plain PyTorch port usually does it.

fp32, NCHW, eager; a per-sample ``torch.utils.data.DataLoader`` (``num_workers=0``) over a Dataset
whose Python transforms crop, flip, convert and normalize one HWC uint8 image at a time, as
torchvision's ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip``, ``ToTensor`` and
``Normalize`` do; plain SGD over ``model.parameters()``. Nothing here is tuned: it is what ours is
measured against.
"""
from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

PAD = 4


def crop_flip(image: np.ndarray, top: int, left: int, flip: bool, pad: int = PAD) -> np.ndarray:
    """The (H, W) window at (top, left) of ``image`` (H, W, C) zero-padded by ``pad``, mirrored if ``flip``."""
    h, w = image.shape[:2]
    out = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))[top:top + h, left:left + w]
    return out[:, ::-1] if flip else out


class ReferenceTransform:
    """Per-sample augmentation (optional) + ToTensor + Normalize, drawing from Python's ``random``."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, augment: bool) -> None:
        self.mean = mean.reshape(-1, 1, 1)
        self.std = std.reshape(-1, 1, 1)
        self.augment = augment

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        if self.augment:
            image = crop_flip(image, random.randint(0, 2 * PAD), random.randint(0, 2 * PAD), random.random() < 0.5)
        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div(255)
        return (x - self.mean) / self.std


class ImageDataset(Dataset):
    """HWC uint8 images in a numpy array (as torchvision's CIFAR10 holds them) with int labels."""

    def __init__(self, images_nchw: torch.Tensor, labels: torch.Tensor, transform: ReferenceTransform) -> None:
        self.images = images_nchw.permute(0, 2, 3, 1).numpy().copy()
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[i]), self.labels[i]


def reference_loader(images: torch.Tensor, labels: torch.Tensor, batch_size: int, mean: torch.Tensor,
                     std: torch.Tensor, *, train: bool, seed: int = 0) -> DataLoader:
    """The port's training (shuffled, augmented) or test (in order, plain) loader."""
    dataset = ImageDataset(images, labels, ReferenceTransform(mean, std, augment=train))
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=train, num_workers=0, generator=generator)


def batches_forever(loader: DataLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Epoch after epoch of ``loader``, so a timed run of any length includes its data loading."""
    while True:
        yield from loader


class ReferenceTrainer:
    """fp32 NCHW training and inference of ``model`` with a port's loop."""

    def __init__(self, model: nn.Module, train_loader: DataLoader, test_loader: DataLoader, device: torch.device,
                 lr: float, momentum: float, weight_decay: float) -> None:
        self.model = model.to(device)
        self.device = device
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.batches = batches_forever(train_loader)
        self.test_loader = test_loader
        self.inference_images = len(test_loader.dataset)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One SGD step on a batch already on the device; the batch-mean loss, detached."""
        loss = F.cross_entropy(self.model(x), y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def train(self, steps: int) -> None:
        self.model.train()
        for _ in range(steps):
            x, y = next(self.batches)
            self.step(x.to(self.device), y.to(self.device))

    @torch.no_grad()
    def infer(self) -> None:
        """Logits for every image of the test loader (eval mode, no_grad)."""
        self.model.eval()
        for x, _ in self.test_loader:
            self.model(x.to(self.device))
