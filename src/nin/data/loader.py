"""A loader that keeps a whole preprocessed split on the device and batches it by tensor indexing.

No worker processes and no per-sample Python: each batch is one ``index_select`` (plus one gather
for augmentation). Shuffling and augmentation depend only on (seed, epoch), and the global batch is
the same whatever the number of processes, so resuming at an epoch boundary and scaling from one to
many GPUs both reproduce single-process training exactly.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from nin.data.augment import Augment


def epoch_seed(seed: int, epoch: int) -> int:
    """A well-mixed 63-bit generator seed from (seed, epoch), identical on every platform."""
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed and epoch must be >= 0, got seed={seed}, epoch={epoch}")
    state = np.random.SeedSequence([seed, epoch]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class DeviceLoader:
    """Batches of (images, labels) from tensors held on ``device`` (moved there once).

    ``batch_size`` is the GLOBAL batch. With ``world_size`` W, global batch i is the same as the
    single-process batch i and rank r receives its contiguous chunk r: with m images in the batch,
    the first m mod W ranks get ⌈m/W⌉ images and the rest ⌊m/W⌋ (``torch.tensor_split`` sizes), so
    sizes differ by at most one and a rank's chunk is empty only in a last batch smaller than W.
    Weight a rank's mean loss by its chunk size to reproduce the single-process mean exactly.

    Every epoch uses a fresh CPU ``torch.Generator`` seeded from (seed, epoch): it draws the
    permutation, then the augmentation parameters for the whole epoch (for global positions, so
    each rank applies its slice of them). Call :meth:`set_epoch` before iterating (default epoch 0).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        augment: Augment | None = None,
        device: str | torch.device = "cpu",
        channels_last: bool = False,
    ) -> None:
        if images.dim() != 4 or labels.shape != (len(images),):
            raise ValueError(f"expected images (N, C, H, W) and labels (N,), got {tuple(images.shape)} and "
                             f"{tuple(labels.shape)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in 0..world_size-1, got rank={rank}, world_size={world_size}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.augment = augment
        self.channels_last = channels_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose permutation and augmentation the next iteration yields."""
        epoch_seed(self.seed, epoch)
        self.epoch = int(epoch)

    def capture_batch(self) -> torch.Tensor:
        """A copy of a full batch's images (dtype, shape and memory format as iteration yields them), for a CUDA
        graph capture: the graph keeps it as its input buffer and copies every batch into it, so it must not
        be a view of the data."""
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        return self.images[: self.batch_size].clone(memory_format=layout)

    def __len__(self) -> int:
        """Batches per epoch (the same on every rank)."""
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        generator = torch.Generator(device="cpu")
        generator.manual_seed(epoch_seed(self.seed, self.epoch))
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        params = self.augment.sample(n, generator).to(self.device) if self.augment is not None else None
        order = order.to(self.device)
        for b in range(len(self)):
            start = b * self.batch_size
            m = min(self.batch_size, n - start)
            base, extra = divmod(m, self.world_size)
            lo = start + self.rank * base + min(self.rank, extra)
            hi = lo + base + (self.rank < extra)
            index = order[lo:hi]
            x = self.images.index_select(0, index)
            if params is not None:
                x = self.augment.apply(x, params[lo:hi])
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels.index_select(0, index)
