"""DeviceLoader: epochs, determinism from (seed, epoch), and multi-rank equivalence."""
from __future__ import annotations

import pytest
import torch

from nin.data import Augment, DeviceLoader

N = 103


def data(n: int = N) -> tuple[torch.Tensor, torch.Tensor]:
    """Image i is filled with the value i, so a batch tells which indices it holds."""
    index = torch.arange(n)
    return index.float()[:, None, None, None].expand(n, 3, 4, 4).contiguous(), index


def ids(x: torch.Tensor) -> list[int]:
    return x[:, 0, 0, 0].long().tolist()


def epoch(loader: DeviceLoader, e: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader.set_epoch(e)
    return list(loader)


def test_every_index_once_per_epoch():
    loader = DeviceLoader(*data(), batch_size=10)
    batches = list(loader)
    assert len(loader) == len(batches) == 11 and [len(y) for _, y in batches] == [10] * 10 + [3]
    seen = [i for _, y in batches for i in y.tolist()]
    assert sorted(seen) == list(range(N)) and seen != list(range(N))
    for x, y in batches:
        assert ids(x) == y.tolist() and x.dtype == torch.float32 and y.dtype == torch.int64


def test_drop_last_and_no_shuffle():
    loader = DeviceLoader(*data(), batch_size=10, drop_last=True, shuffle=False)
    batches = list(loader)
    assert len(loader) == len(batches) == 10
    assert [i for _, y in batches for i in y.tolist()] == list(range(100))


def test_batches_depend_only_on_seed_and_epoch():
    a = DeviceLoader(*data(), batch_size=16, seed=5, augment=Augment(pad=1, flip=True))
    b = DeviceLoader(*data(), batch_size=16, seed=5, augment=Augment(pad=1, flip=True))
    e0, e1 = epoch(a, 0), epoch(a, 1)
    assert [y.tolist() for _, y in e0] != [y.tolist() for _, y in e1]  # epochs differ
    assert all(torch.equal(x, x2) and torch.equal(y, y2) for (x, y), (x2, y2) in zip(e1, epoch(b, 1)))
    assert all(torch.equal(x, x2) for (x, _), (x2, _) in zip(e0, epoch(a, 0)))  # resuming at epoch 0 again
    fresh = DeviceLoader(*data(), batch_size=16, seed=5, augment=Augment(pad=1, flip=True))
    assert all(torch.equal(x, x2) for (x, _), (x2, _) in zip(e0, list(fresh)))  # default epoch is 0
    other = DeviceLoader(*data(), batch_size=16, seed=6)
    assert [y.tolist() for _, y in e0] != [y.tolist() for _, y in epoch(other, 0)]


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("drop_last", [False, True])
def test_rank_chunks_reassemble_the_single_process_batch(world_size, drop_last):
    augment = Augment(pad=2, flip=True)
    images, labels = torch.randn(N, 3, 6, 6), torch.arange(N)
    kwargs = dict(batch_size=16, seed=3, drop_last=drop_last, augment=augment)
    single = epoch(DeviceLoader(images, labels, **kwargs), 4)
    ranks = [epoch(DeviceLoader(images, labels, rank=r, world_size=world_size, **kwargs), 4)
             for r in range(world_size)]
    assert all(len(r) == len(single) for r in ranks)
    for b, (x, y) in enumerate(single):
        chunks = [ranks[r][b] for r in range(world_size)]
        sizes = [len(cy) for _, cy in chunks]
        assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
        assert torch.equal(torch.cat([cx for cx, _ in chunks]), x)  # augmentation included
        assert torch.equal(torch.cat([cy for _, cy in chunks]), y)


def test_channels_last_and_device():
    loader = DeviceLoader(*data(), batch_size=8, channels_last=True, device="cpu")
    x, _ = next(iter(loader))
    assert x.is_contiguous(memory_format=torch.channels_last) and x.device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    kwargs = dict(batch_size=16, seed=1, augment=Augment(pad=2, flip=True))
    cpu = list(DeviceLoader(*data(), **kwargs))
    gpu = list(DeviceLoader(*data(), device="cuda", **kwargs))
    assert all(torch.equal(x, gx.cpu()) and torch.equal(y, gy.cpu()) for (x, y), (gx, gy) in zip(cpu, gpu))


def test_invalid_arguments():
    images, labels = data()
    with pytest.raises(ValueError, match="rank"):
        DeviceLoader(images, labels, 8, rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        DeviceLoader(images, labels, 0)
    with pytest.raises(ValueError, match="labels"):
        DeviceLoader(images, labels[:-1], 8)
    with pytest.raises(ValueError, match="epoch must be >= 0"):
        DeviceLoader(images, labels, 8).set_epoch(-1)
