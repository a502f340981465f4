"""load_dataset on the offline real data and on tiny generated files in every official format."""
from __future__ import annotations

import dataclasses
import gzip
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from _idx import idx_bytes, write_mnist

from nin.data import SPLITS, DatasetError, LabeledImages, default_root, load_dataset, resolve_root

MNIST_TRAIN_HIST = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_HIST = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
CIFAR10_BATCH1_HIST = [1005, 974, 1032, 1016, 999, 937, 1030, 1001, 1025, 981]
CIFAR10_TEST1000_HIST = [103, 89, 100, 103, 90, 86, 112, 102, 106, 109]


def hist(labels: torch.Tensor, n: int = 10) -> list[int]:
    return torch.bincount(labels, minlength=n).tolist()


def check_layout(d: LabeledImages, n: int, chw: tuple[int, int, int]) -> None:
    assert len(d) == n
    assert d.images.shape == (n, *chw) and d.images.dtype == torch.uint8 and d.images.is_contiguous()
    assert d.labels.shape == (n,) and d.labels.dtype == torch.int64


# ------------------------------------------------------------------------------ real (offline) data

def test_mnist_real(shared_path):
    root = shared_path("mnist").parent
    full = load_dataset("mnist", "train+valid", root=root)
    check_layout(full, 60_000, (1, 28, 28))
    assert hist(full.labels) == MNIST_TRAIN_HIST
    assert full.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert full.classes == [str(d) for d in range(10)]
    assert abs(full.images.double().mean().item() / 255 - 0.1307) < 1e-4

    train, valid = load_dataset("mnist", "train", root=root), load_dataset("mnist", "valid", root=root)
    check_layout(train, 50_000, (1, 28, 28))
    check_layout(valid, 10_000, (1, 28, 28))
    assert torch.equal(train.images, full.images[:50_000]) and torch.equal(valid.images, full.images[50_000:])
    assert torch.equal(torch.cat([train.labels, valid.labels]), full.labels)

    x, y, classes = load_dataset("mnist", "test", root=root)
    assert x.shape == (10_000, 1, 28, 28) and classes == full.classes
    assert hist(y) == MNIST_TEST_HIST
    assert y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def test_fashion_mnist_real(shared_path):
    root = shared_path("fashion-mnist").parent
    full = load_dataset("fashion-mnist", "train+valid", root=root)
    check_layout(full, 60_000, (1, 28, 28))
    assert hist(full.labels) == [6000] * 10
    assert full.classes[0] == "T-shirt/top" and full.classes[9] == "Ankle boot"
    test = load_dataset("fashion-mnist", "test", root=root)
    check_layout(test, 10_000, (1, 28, 28))
    assert hist(test.labels) == [1000] * 10


def test_cifar10_lossless_train(shared_path):
    root = shared_path("cifar-10-lossless-train-batches-py").parent
    full = load_dataset("cifar10", "train+valid", root=root)
    check_layout(full, 50_000, (3, 32, 32))
    assert hist(full.labels) == [5000] * 10
    assert hist(full.labels[:10_000]) == CIFAR10_BATCH1_HIST
    assert not full.lossy and "lossless" in full.description and "cifar-10-lossless-train" in full.description
    assert full.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    channel_mean = full.images.double().mean(dim=(0, 2, 3))
    assert torch.allclose(channel_mean, torch.tensor([125.3069, 122.9504, 113.8654], dtype=torch.float64), atol=1e-3)

    valid = load_dataset("cifar10", "valid", root=root)
    assert torch.equal(valid.images, full.images[40_000:]) and torch.equal(valid.labels, full.labels[40_000:])
    train = load_dataset("cifar10", "train", root=root)
    assert torch.equal(train.labels, full.labels[:40_000])
    assert torch.equal(train.images[-5:], full.images[39_995:40_000])


def test_cifar10_test_copies(shared_path):
    root = shared_path("cifar-10-lossless-subset").parent
    shared_path("cifar-10-jpeg75-batches-py", "test_batch")
    exact = load_dataset("cifar10", "test-lossless-1000", root=root)
    check_layout(exact, 1000, (3, 32, 32))
    assert exact.labels[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    assert hist(exact.labels) == CIFAR10_TEST1000_HIST
    assert not exact.lossy

    jpeg = load_dataset("cifar10", "test-jpeg75", root=root)
    check_layout(jpeg, 10_000, (3, 32, 32))
    assert jpeg.lossy and jpeg.split == "test-jpeg75"
    assert "LOSSY JPEG-75 copy, not the official test set" in jpeg.description
    assert "LOSSY" in repr(jpeg)
    assert hist(jpeg.labels) == [1000] * 10
    # Entries 0-999 are the same images as the exact subset, through JPEG: close but not equal.
    assert torch.equal(jpeg.labels[:1000], exact.labels)
    mse = ((jpeg.images[:1000].double() - exact.images.double()) ** 2).mean(dim=(1, 2, 3))
    psnr = 10 * torch.log10(255.0 ** 2 / mse)
    assert (psnr > 20).all() and 29 < psnr.mean().item() < 32
    assert not torch.equal(jpeg.images[:1000], exact.images)


def test_cifar10_official_test_missing_says_what_to_do(shared_path):
    root = shared_path("cifar-10-lossless-subset").parent
    if (root / "cifar-10-batches-py").exists() or (root / "cifar-10-python.tar.gz").exists():
        pytest.skip("this data folder holds the official CIFAR-10 test set")
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10", "test", root=root)
    msg = str(err.value)
    assert str(root / "cifar-10-batches-py" / "test_batch") in msg
    assert "test-jpeg75" in msg and "test-lossless-1000" in msg and "download=True" in msg


# ------------------------------------------------------------------------------------- API basics

def test_unknown_name_and_split_list_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="cifar10.*svhn"):
        load_dataset("imagenet", "train", root=tmp_path)
    with pytest.raises(ValueError, match="train, valid, train\\+valid, test"):
        load_dataset("mnist", "val", root=tmp_path)
    assert "test-jpeg75" in SPLITS["cifar10"] and "test-jpeg75" not in SPLITS["cifar100"]


def test_root_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("NIN_DATA", str(tmp_path / "env"))
    assert resolve_root(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_root() == tmp_path / "env"
    monkeypatch.delenv("NIN_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert resolve_root() == default_root() == tmp_path / "cache" / "nin"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_root() == Path.home() / ".cache" / "nin"


def test_env_root_is_used_and_missing_files_are_named(tmp_path, monkeypatch):
    write_mnist(tmp_path / "mnist", n_train=10_005, n_test=7, gz=True)
    monkeypatch.setenv("NIN_DATA", str(tmp_path))
    assert len(load_dataset("mnist", "test")) == 7
    monkeypatch.setenv("NIN_DATA", str(tmp_path / "empty"))
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", "test")
    assert str(tmp_path / "empty" / "mnist" / "t10k-images-idx3-ubyte.gz") in str(err.value)
    assert "download=True" in str(err.value)


def test_labeled_images_is_a_frozen_checked_record():
    d = LabeledImages(torch.zeros(2, 1, 3, 3, dtype=torch.uint8), torch.tensor([0, 1]), ["a", "b"], "x", "train",
                      "x 'train'")
    x, y, classes = d
    assert len(d) == 2 and classes == ["a", "b"] and not d.lossy
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.split = "test"  # type: ignore[misc]
    with pytest.raises(ValueError, match="uint8"):
        LabeledImages(torch.zeros(2, 1, 3, 3), torch.tensor([0, 1]), [], "x", "train", "")
    with pytest.raises(ValueError, match="int64"):
        LabeledImages(torch.zeros(2, 1, 3, 3, dtype=torch.uint8), torch.tensor([0]), [], "x", "train", "")


# ------------------------------------------------------------------------------ generated: MNIST IDX

@pytest.mark.parametrize("gz", [True, False])
def test_generated_idx_splits(tmp_path, gz):
    arrays = write_mnist(tmp_path / "fashion-mnist", n_train=10_012, n_test=9, gz=gz)
    (x, y), (xt, yt) = arrays["train"], arrays["t10k"]
    train = load_dataset("fashion-mnist", "train", root=tmp_path)
    valid = load_dataset("fashion-mnist", "valid", root=tmp_path)
    full = load_dataset("fashion-mnist", "train+valid", root=tmp_path)
    test = load_dataset("fashion-mnist", "test", root=tmp_path)
    check_layout(train, 12, (1, 4, 4))
    check_layout(valid, 10_000, (1, 4, 4))
    assert np.array_equal(train.images[:, 0].numpy(), x[:12]) and np.array_equal(valid.labels.numpy(), y[12:])
    assert np.array_equal(full.images[:, 0].numpy(), x) and np.array_equal(test.images[:, 0].numpy(), xt)
    assert np.array_equal(test.labels.numpy(), yt)


@pytest.mark.parametrize("damage, expected", [
    (lambda raw: raw[:-1], "header says shape"),
    (lambda raw: raw + b"\0", "header says shape"),
    (lambda raw: b"\0\0\x08\x02" + raw[4:], "wrong IDX magic number 2050"),
    (lambda raw: raw[:6], "shorter than"),
])
def test_damaged_idx_names_the_file(tmp_path, damage, expected):
    write_mnist(tmp_path / "mnist", n_train=10_001, n_test=5, gz=False)
    path = tmp_path / "mnist" / "t10k-images-idx3-ubyte"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DatasetError, match=expected) as err:
        load_dataset("mnist", "test", root=tmp_path)
    assert str(path) in str(err.value) and "download" in str(err.value)


def test_damaged_gzip_and_mismatched_counts(tmp_path):
    write_mnist(tmp_path / "mnist", n_train=10_001, n_test=5, gz=True)
    path = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(DatasetError, match="cannot decompress") as err:
        load_dataset("mnist", "test", root=tmp_path)
    assert str(path) in str(err.value)
    path.write_bytes(good[:10] + bytes(len(good) - 10))  # corrupt deflate stream
    with pytest.raises(DatasetError, match=str(path)):
        load_dataset("mnist", "test", root=tmp_path)
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(4, np.uint8))))
    with pytest.raises(DatasetError, match="5 images but .* 4 labels"):
        load_dataset("mnist", "test", root=tmp_path)


def test_too_few_training_images_for_the_validation_split(tmp_path):
    write_mnist(tmp_path / "mnist", n_train=50, n_test=5, gz=True)
    assert len(load_dataset("mnist", "train+valid", root=tmp_path)) == 50
    with pytest.raises(DatasetError, match="too few"):
        load_dataset("mnist", "valid", root=tmp_path)


# --------------------------------------------------------------------------- generated: CIFAR pickles

def cifar_images(n: int, offset: int) -> np.ndarray:
    """Compressible (N, 3072) uint8 images; image i starts with the bytes of offset + i."""
    x = np.tile(np.arange(3072, dtype=np.uint32) % 251, (n, 1)).astype(np.uint8)
    x[:, :4] = np.frombuffer((np.arange(n, dtype=">u4") + offset).tobytes(), np.uint8).reshape(n, 4)
    return x


def cifar_pickle(data: np.ndarray, labels: list[int], label_key: str, bytes_keys: bool) -> bytes:
    d = {"batch_label": "generated", "data": data, label_key: labels, "filenames": ["f"] * len(labels)}
    if bytes_keys:  # how the Python 2 originals read back with encoding="bytes"
        d = {k.encode(): (v.encode() if isinstance(v, str) else v) for k, v in d.items()}
    return pickle.dumps(d, protocol=2)


def write_cifar10(root: Path, per_batch: int, n_test: int, tar: bool = False, bytes_keys: bool = True,
                  folder: str = "cifar-10-batches-py") -> dict[str, tuple[np.ndarray, list[int]]]:
    rng = np.random.default_rng(1)
    files = {}
    for k, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        n = n_test if name == "test_batch" else per_batch
        files[name] = (cifar_images(n, offset=100_000 * k), rng.integers(0, 10, n).tolist())
    blobs = {name: cifar_pickle(x, y, "labels", bytes_keys) for name, (x, y) in files.items()}
    blobs["batches.meta"] = pickle.dumps({b"label_names": [b"airplane"] * 10}, protocol=2)
    write_tree(root, folder, blobs, tar and "cifar-10-python.tar.gz")
    return files


def write_tree(root: Path, folder: str, blobs: dict[str, bytes], archive: str | bool) -> None:
    root.mkdir(parents=True, exist_ok=True)
    if archive:
        with tarfile.open(root / str(archive), "w:gz") as t:
            for name, blob in blobs.items():
                info = tarfile.TarInfo(f"{folder}/{name}")
                info.size = len(blob)
                t.addfile(info, io.BytesIO(blob))
        return
    (root / folder).mkdir()
    for name, blob in blobs.items():
        (root / folder / name).write_bytes(blob)


def batch_images(x: np.ndarray) -> np.ndarray:
    return x.reshape(-1, 3, 32, 32)


@pytest.mark.parametrize("tar, bytes_keys", [(False, True), (False, False), (True, True)])
def test_generated_cifar10(tmp_path, tar, bytes_keys):
    files = write_cifar10(tmp_path, per_batch=6, n_test=1003, tar=tar, bytes_keys=bytes_keys)
    train = load_dataset("cifar10", "train", root=tmp_path)
    valid = load_dataset("cifar10", "valid", root=tmp_path)
    full = load_dataset("cifar10", "train+valid", root=tmp_path)
    test = load_dataset("cifar10", "test", root=tmp_path)
    first = load_dataset("cifar10", "test-lossless-1000", root=tmp_path)
    expected = np.concatenate([batch_images(files[f"data_batch_{i}"][0]) for i in range(1, 6)])
    assert np.array_equal(full.images.numpy(), expected)
    assert np.array_equal(train.images.numpy(), expected[:24]) and np.array_equal(valid.images.numpy(), expected[24:])
    assert valid.labels.tolist() == files["data_batch_5"][1]
    assert np.array_equal(test.images.numpy(), batch_images(files["test_batch"][0]))
    assert len(first) == 1000 and first.labels.tolist() == files["test_batch"][1][:1000]
    assert ("cifar-10-python.tar.gz" in test.description) == tar and not test.lossy


def test_official_cifar10_is_preferred_to_the_lossless_copy(tmp_path):
    official = write_cifar10(tmp_path, per_batch=3, n_test=2)
    write_cifar10(tmp_path, per_batch=4, n_test=2, folder="cifar-10-lossless-train-batches-py")
    assert load_dataset("cifar10", "valid", root=tmp_path).labels.tolist() == official["data_batch_5"][1]


def cifar100_blobs(n_train: int, n_test: int) -> dict[str, bytes]:
    rng = np.random.default_rng(2)
    blobs = {}
    for name, n in (("train", n_train), ("test", n_test)):
        blobs[name] = cifar_pickle(cifar_images(n, 0), rng.integers(0, 100, n).tolist(), "fine_labels", True)
    blobs["meta"] = pickle.dumps({b"fine_label_names": [f"c{i}".encode() for i in range(100)],
                                  b"coarse_label_names": [b"x"] * 20}, protocol=2)
    return blobs


def test_generated_cifar100(tmp_path):
    write_tree(tmp_path / "a", "cifar-100-python", cifar100_blobs(10_004, 3), archive=False)
    train = load_dataset("cifar100", "train", root=tmp_path / "a")
    valid = load_dataset("cifar100", "valid", root=tmp_path / "a")
    check_layout(train, 4, (3, 32, 32))
    check_layout(valid, 10_000, (3, 32, 32))
    assert train.classes[:2] == ["c0", "c1"] and len(train.classes) == 100
    assert "fine labels" in valid.description
    write_tree(tmp_path / "b", "cifar-100-python", cifar100_blobs(5, 3), archive="cifar-100-python.tar.gz")
    test = load_dataset("cifar100", "test", root=tmp_path / "b")
    check_layout(test, 3, (3, 32, 32))
    assert test.labels.max() < 100


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("blob, expected", [
    (lambda good: good[: len(good) // 2], "not a readable CIFAR pickle"),
    (lambda good: b"garbage" * 10, "not a readable CIFAR pickle"),
    (lambda good: pickle.dumps({b"data": _Evil(), b"labels": []}, protocol=2), "refusing to load"),
    (lambda good: pickle.dumps([1, 2, 3], protocol=2), "expected a pickled dict"),
    (lambda good: cifar_pickle(np.zeros((3, 3071), np.uint8), [0, 1, 2], "labels", True), r"shape \(N, 3072\)"),
    (lambda good: cifar_pickle(cifar_images(3, 0), [0, 1], "labels", True), "3 images but 2 labels"),
    (lambda good: cifar_pickle(cifar_images(2, 0), [0, 10], "labels", True), r"labels must lie in 0\.\.9"),
    (lambda good: pickle.dumps({b"data": cifar_images(1, 0)}, protocol=2), "lack 'data' or 'labels'"),
])
def test_damaged_cifar_pickle_names_the_file(tmp_path, blob, expected):
    write_cifar10(tmp_path, per_batch=2, n_test=2)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(blob(path.read_bytes()))
    with pytest.raises(DatasetError, match=expected) as err:
        load_dataset("cifar10", "test", root=tmp_path)
    assert str(path) in str(err.value)


def test_damaged_cifar_archive_names_the_file(tmp_path):
    write_cifar10(tmp_path, per_batch=2, n_test=2, tar=True)
    archive = tmp_path / "cifar-10-python.tar.gz"
    good = archive.read_bytes()
    archive.write_bytes(good[: len(good) // 2])
    with pytest.raises(DatasetError, match="not a readable .tar.gz") as err:
        load_dataset("cifar10", "test", root=tmp_path)
    assert str(archive) in str(err.value)
    with tarfile.open(archive, "w:gz") as t:  # a valid archive without the test batch
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.size = 1
        t.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(DatasetError, match="lacks cifar-10-batches-py/test_batch"):
        load_dataset("cifar10", "test", root=tmp_path)


def test_missing_member_of_an_extracted_folder(tmp_path):
    write_cifar10(tmp_path, per_batch=2, n_test=2)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match="data_batch_3 is missing"):
        load_dataset("cifar10", "train", root=tmp_path)


def test_generated_lossless_test_subset(tmp_path):
    x = np.random.default_rng(3).integers(0, 256, (1000, 32, 32, 3), dtype=np.uint8)
    y = (np.arange(1000) % 10).astype(np.uint8)
    (tmp_path / "cifar-10-lossless-subset").mkdir()
    np.savez(tmp_path / "cifar-10-lossless-subset" / "test_1000.npz", x=x, y=y)
    d = load_dataset("cifar10", "test-lossless-1000", root=tmp_path)
    assert np.array_equal(d.images.numpy(), x.transpose(0, 3, 1, 2)) and d.labels.tolist() == y.tolist()
    with pytest.raises(DatasetError, match="cannot be downloaded"):
        load_dataset("cifar10", "test-jpeg75", root=tmp_path)


# ------------------------------------------------------------------------------ generated: SVHN .mat

def write_svhn(folder: Path, name: str, labels: np.ndarray) -> np.ndarray:
    """An SVHN-format file (X is 32×32×3×N, y is N×1 with 10 for digit 0); returns X as NCHW."""
    from scipy.io import savemat

    folder.mkdir(parents=True, exist_ok=True)
    n = len(labels)
    nchw = np.random.default_rng(n).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    savemat(folder / name, {"X": nchw.transpose(2, 3, 1, 0), "y": labels.reshape(-1, 1).astype(np.uint8)})
    return nchw


def pylearn2_valid_sets(y_train: np.ndarray, y_extra: np.ndarray) -> tuple[set[int], set[int]]:
    """pylearn2's SVHN.make_data selection, written out from its source (file labels 1..10)."""
    rng = np.random.RandomState(322)
    out = []
    for y, per_class in ((y_train, 400), (y_extra, 200)):
        chosen = []
        for i in range(1, 11):
            index = np.nonzero(y.reshape(-1, 1) == i)[0]
            rng.shuffle(index)
            chosen.append(index[:per_class])
        out.append(set(np.concatenate(chosen).tolist()))
    return out[0], out[1]


def test_generated_svhn(tmp_path):
    pytest.importorskip("scipy")
    folder = tmp_path / "svhn"
    rng = np.random.default_rng(4)
    y_train = rng.permutation(np.repeat(np.arange(1, 11), 405))
    y_extra = rng.permutation(np.repeat(np.arange(1, 11), 203))
    y_test = np.array([10, 1, 2, 10, 9])
    x_train = write_svhn(folder, "train_32x32.mat", y_train)
    x_extra = write_svhn(folder, "extra_32x32.mat", y_extra)
    x_test = write_svhn(folder, "test_32x32.mat", y_test)

    test = load_dataset("svhn", "test", root=tmp_path)
    assert np.array_equal(test.images.numpy(), x_test) and test.labels.tolist() == [0, 1, 2, 0, 9]

    valid = load_dataset("svhn", "valid", root=tmp_path)
    train = load_dataset("svhn", "train", root=tmp_path)
    full = load_dataset("svhn", "train+valid", root=tmp_path)
    check_layout(valid, 6000, (3, 32, 32))
    check_layout(train, 4050 + 2030 - 6000, (3, 32, 32))
    check_layout(full, 4050 + 2030, (3, 32, 32))
    assert hist(valid.labels) == [600] * 10

    v_train, v_extra = pylearn2_valid_sets(y_train, y_extra)
    in_train = np.array(sorted(v_train))
    in_extra = np.array(sorted(v_extra))
    assert np.array_equal(valid.images.numpy(), np.concatenate([x_train[in_train], x_extra[in_extra]]))
    rest_train = np.array([i for i in range(len(y_train)) if i not in v_train])
    rest_extra = np.array([i for i in range(len(y_extra)) if i not in v_extra])
    assert np.array_equal(train.images.numpy(), np.concatenate([x_train[rest_train], x_extra[rest_extra]]))
    expected_labels = np.concatenate([y_train[rest_train], y_extra[rest_extra]]) % 10
    assert np.array_equal(train.labels.numpy(), expected_labels)
    assert np.array_equal(full.images.numpy(), np.concatenate([x_train, x_extra]))


def test_svhn_test_needs_only_the_test_file(tmp_path):
    pytest.importorskip("scipy")
    write_svhn(tmp_path / "svhn", "test_32x32.mat", np.array([1, 2]))
    assert len(load_dataset("svhn", "test", root=tmp_path)) == 2
    with pytest.raises(DatasetError, match="train_32x32.mat, which is missing"):
        load_dataset("svhn", "valid", root=tmp_path)


@pytest.mark.parametrize("damage, expected", [
    ("truncate", "not a readable MATLAB"),
    ("labels", r"labels must lie in 1\.\.10"),
    ("shape", r"shape \(32, 32, 3, N\)"),
    ("count", "3 images but 2 labels"),
])
def test_damaged_svhn_names_the_file(tmp_path, damage, expected):
    from scipy.io import savemat

    path = tmp_path / "svhn" / "test_32x32.mat"
    write_svhn(path.parent, path.name, np.array([1, 2, 3]))
    x = np.zeros((32, 32, 3, 3), np.uint8)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:1000])
    elif damage == "labels":
        savemat(path, {"X": x, "y": np.array([[0], [1], [2]], np.uint8)})
    elif damage == "shape":
        savemat(path, {"X": np.zeros((28, 28, 3), np.uint8), "y": np.array([[1]], np.uint8)})
    else:
        savemat(path, {"X": x, "y": np.array([[1], [2]], np.uint8)})
    with pytest.raises(DatasetError, match=expected) as err:
        load_dataset("svhn", "test", root=tmp_path)
    assert str(path) in str(err.value)
