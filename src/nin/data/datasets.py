"""The paper's datasets and splits as uint8 tensors: one call, one checked result.

``load_dataset(name, split)`` finds the official files under a data root (the ``root`` argument, else
``$NIN_DATA``, else ``$XDG_CACHE_HOME/nin`` or ``~/.cache/nin``), optionally downloads them, and
returns the split the paper uses. Layout under the root::

    mnist/, fashion-mnist/          the 4 official IDX files, gzipped or not
    cifar-10-batches-py/            or cifar-10-python.tar.gz (official python version)
    cifar-100-python/               or cifar-100-python.tar.gz
    svhn/                           train_32x32.mat, test_32x32.mat, extra_32x32.mat

plus this project's offline CIFAR-10 copies (see the shared data README):
``cifar-10-lossless-train-batches-py/`` (exact training batches), ``cifar-10-lossless-subset/test_1000.npz``
(exact test images 0-999) and ``cifar-10-jpeg75-batches-py/`` (the test set through JPEG-75: lossy).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import nin.data.download as dl
from nin.data.folder import DEFAULT_IMAGE_SIZE, FOLDER_SPLITS, read_folder
from nin.data.formats import (
    DatasetError,
    cifar_arrays,
    cifar_label_names,
    damaged,
    read_cifar_members,
    read_idx,
    read_npz_images,
    read_svhn_mat,
    svhn_to_nchw,
)

PAPER_SPLITS = ("train", "valid", "train+valid", "test")
SPLITS: dict[str, tuple[str, ...]] = {
    "mnist": PAPER_SPLITS,
    "fashion-mnist": PAPER_SPLITS,
    "cifar10": PAPER_SPLITS + ("test-lossless-1000", "test-jpeg75"),
    "cifar100": PAPER_SPLITS,
    "svhn": PAPER_SPLITS,
    "folder": FOLDER_SPLITS,  # your own images: class folders under the root (nin.data.folder)
}

# which parts of the official training set a split holds: splits that share one share images
_TRAINING_PARTS = {"train": {"train"}, "valid": {"valid"}, "train+valid": {"train", "valid"}}


def shares_images(split: str, other: str) -> bool:
    """Whether two splits of one dataset hold some of the same images: an error measured on ``split`` by a network
    trained on ``other`` is then no held-out error."""
    return bool(_TRAINING_PARTS.get(split, set()) & _TRAINING_PARTS.get(other, set()))


DIGITS = [str(d) for d in range(10)]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

VALID_SIZE = 10_000  # MNIST, Fashion-MNIST, CIFAR: the last 10,000 training images
SVHN_VALID_PER_CLASS = {"train_32x32.mat": 400, "extra_32x32.mat": 200}
SVHN_VALID_SEED = 322  # pylearn2's SVHN split


@dataclass(frozen=True, eq=False)
class LabeledImages:
    """One split: uint8 images (N, C, H, W), int64 labels (N,), class names and where it came from.

    Unpacks as ``images, labels, classes = load_dataset(...)``. ``lossy`` marks data that is not
    pixel-exact (the JPEG-75 CIFAR-10 test copy); ``description`` says so in words.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str
    split: str
    description: str
    lossy: bool = False

    def __post_init__(self) -> None:
        x, y = self.images, self.labels
        if x.dtype != torch.uint8 or x.dim() != 4 or not x.is_contiguous():
            raise ValueError(f"images must be a contiguous uint8 (N, C, H, W) tensor, got {x.dtype} {tuple(x.shape)}")
        if y.dtype != torch.int64 or y.shape != (len(x),):
            raise ValueError(f"labels must be int64 of shape ({len(x)},), got {y.dtype} {tuple(y.shape)}")

    def __len__(self) -> int:
        return len(self.labels)

    def __iter__(self) -> Iterator[object]:
        return iter((self.images, self.labels, self.classes))

    def __repr__(self) -> str:
        return f"LabeledImages({self.description})"


def default_root() -> Path:
    """The per-user cache folder used when neither ``root=`` nor ``$NIN_DATA`` is given."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "nin"


def resolve_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: the argument, else ``$NIN_DATA``, else :func:`default_root`."""
    if root is None:
        root = os.environ.get("NIN_DATA") or default_root()
    return Path(root).expanduser()


def run_root(data_dir: str | os.PathLike | None, recorded: str | None) -> str | os.PathLike | None:
    """The data root for a trained run's data: ``data_dir`` if given (``--data-dir``), else the root the run
    recorded while that folder still exists, else None (then ``$NIN_DATA``, then :func:`default_root`)."""
    if data_dir is not None:
        return data_dir
    return recorded if recorded is not None and Path(recorded).is_dir() else None


def load_dataset(name: str, split: str, root: str | os.PathLike | None = None,
                 download: bool = False, image_size: int | None = None) -> LabeledImages:
    """Load one split of a dataset as used in the paper.

    Splits: ``train`` (the training images minus the validation ones: 40,000 for CIFAR, 50,000 for
    MNIST / Fashion-MNIST), ``valid`` (CIFAR, MNIST, Fashion-MNIST: the last 10,000 training images;
    SVHN: 400 per class from train + 200 per class from extra, pylearn2's choice, see
    :func:`svhn_valid_indices`), ``train+valid`` (the whole official training set; SVHN: train +
    extra) and ``test`` (the official test set). CIFAR-10 also has ``test-lossless-1000`` (official
    test images 0-999) and ``test-jpeg75`` (a LOSSY JPEG copy of all 10,000, not the official test set).

    With ``download=True`` missing official files are fetched, checked against their published MD5
    and (CIFAR) extracted under the root; archives and files already there are checked against their
    MD5 and fetched again only if they differ. Missing or damaged files raise :class:`DatasetError`
    saying which file and what to do.

    ``name="folder"`` reads your own images: ``root`` (required) is a folder of class folders, every file is
    fitted to ``image_size`` (default 32) square, and the splits are ``train``, ``valid`` (10% of each class
    held out) and ``train+valid``; see :mod:`nin.data.folder`.
    """
    if name not in SPLITS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(SPLITS)}")
    if split not in SPLITS[name]:
        raise ValueError(f"unknown split {split!r} for {name}; valid splits: {', '.join(SPLITS[name])}")
    if name == "folder":
        return _load_folder(split, root, image_size)
    if image_size is not None:
        raise ValueError(f"image_size is for the folder dataset; {name} images have their official size")
    base = resolve_root(root)
    if name in ("mnist", "fashion-mnist"):
        return _load_idx(name, split, base / name, download)
    if name == "cifar10":
        return _load_cifar10(split, base, download)
    if name == "cifar100":
        return _load_cifar100(split, base, download)
    return _load_svhn(split, base / "svhn", download)


def download_dataset(name: str, root: str | os.PathLike | None = None) -> list[Path]:
    """Fetch every official file of ``name`` into the data root (``nin data download``) and return where they are.

    Each file is checked against its published MD5 (files already there and matching are kept without touching
    the network) and the CIFAR archives are extracted, so every split then loads without ``download=True``.
    """
    if name not in dl.CHECKSUMS:
        raise ValueError(f"cannot download {name!r}; downloadable datasets: {', '.join(dl.CHECKSUMS)}")
    base = resolve_root(root)
    if name in _CIFAR_FILES:
        return [_official_cifar(name, base, *_CIFAR_FILES[name], download=True)]
    return [dl.fetch(name, filename, base / name) for filename in dl.CHECKSUMS[name]]  # mnist/, svhn/, ...


# ------------------------------------------------------------------------------------------- helpers

def _missing(name: str, split: str, path: Path, official: Path, root: Path, extra: str = "") -> DatasetError:
    """The error for a missing file: how to fetch it, or which URL to put where by hand (``official``: the
    file a download writes, which may differ from ``path``, e.g. an archive that holds it)."""
    problem = f"{name} {split!r} needs {path}, which is missing.{extra} To fix:"
    by_hand = f"download {dl.MIRRORS[name][0]}{official.name} and put it at {official}"
    return DatasetError(
        f"{problem} pass download=True to fetch it, or {by_hand} (the data root is root=, else $NIN_DATA, else "
        f"{default_root()}).",
        cli=f"{problem} run `nin data download {name} --data-dir {root}`, or on a machine with internet {by_hand}; "
            f"the data root is --data-dir, else $NIN_DATA, else {default_root()} (here: {root}).")


def _result(name: str, split: str, images: np.ndarray, labels: np.ndarray, classes: list[str], what: str,
            source: Path, lossy: bool = False) -> LabeledImages:
    """Wrap arrays (copied if they are read-only views) into a checked :class:`LabeledImages`.

    An empty split is refused: no official file is empty, and an error rate over zero images is NaN."""
    if len(labels) == 0:
        raise damaged(source, f"the {name} {split!r} split holds no images")
    x = torch.from_numpy(images if images.flags.writeable and images.flags.c_contiguous else images.copy())
    y = torch.from_numpy(labels.astype(np.int64, copy=not labels.flags.writeable))
    text = f"{name} {split!r}: {len(y):,} images, {len(classes)} classes, {what}; from {source}"
    return LabeledImages(x, y, classes, name, split, text, lossy)


def _train_valid(split: str, x: np.ndarray, y: np.ndarray, where: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """The paper's train / valid / train+valid cut of one official training set (valid = the last 10,000)."""
    n = len(y)
    cut = n - VALID_SIZE
    if cut <= 0 and split != "train+valid":
        raise DatasetError(f"{where}: only {n:,} training images, too few to hold out the last {VALID_SIZE:,} "
                           "for validation; the official file has 50,000 or 60,000. Download it again.")
    if split == "train":
        return x[:cut].copy(), y[:cut].copy(), f"official training images 0-{cut - 1:,}"
    if split == "valid":
        return x[cut:].copy(), y[cut:].copy(), f"official training images {cut:,}-{n - 1:,}"
    return x, y, f"all {n:,} official training images"


# ---------------------------------------------------------------------------------- MNIST / Fashion

_IDX_STEMS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _idx_file(name: str, split: str, folder: Path, stem: str, download: bool) -> Path:
    gz, plain = folder / f"{stem}.gz", folder / stem
    if plain.is_file() and not gz.is_file():
        return plain
    if download:
        return dl.fetch(name, gz.name, folder)
    if gz.is_file():
        return gz
    raise _missing(name, split, gz, gz, folder.parent, f" An uncompressed {plain.name} would do too.")


def _load_idx(name: str, split: str, folder: Path, download: bool) -> LabeledImages:
    part = "test" if split == "test" else "train"
    image_path, label_path = (_idx_file(name, split, folder, s, download) for s in _IDX_STEMS[part])
    x = read_idx(image_path, ndim=3)
    y = read_idx(label_path, ndim=1)
    if len(x) != len(y):
        raise DatasetError(f"{image_path} holds {len(x):,} images but {label_path} {len(y):,} labels: they "
                           "do not belong together; delete both and download them again")
    if y.max(initial=0) > 9:
        raise DatasetError(f"{label_path}: labels must lie in 0..9, found {y.max()}; the file is not the "
                           "official one; delete it and download it again")
    x = x.reshape(len(x), 1, *x.shape[1:])
    classes = DIGITS if name == "mnist" else FASHION_CLASSES
    if split == "test":
        return _result(name, split, x, y, classes, f"the official {len(y):,} test images", folder)
    x, y, what = _train_valid(split, x, y, image_path)
    return _result(name, split, x, y, classes, what, folder)


# ----------------------------------------------------------------------------------------- CIFAR

_CIFAR10_DIR, _CIFAR10_TAR = "cifar-10-batches-py", "cifar-10-python.tar.gz"
_CIFAR100_DIR, _CIFAR100_TAR = "cifar-100-python", "cifar-100-python.tar.gz"
_LOSSLESS_TRAIN_DIR = "cifar-10-lossless-train-batches-py"
_LOSSLESS_TEST_NPZ = Path("cifar-10-lossless-subset") / "test_1000.npz"
_JPEG75_DIR = "cifar-10-jpeg75-batches-py"
_CIFAR_FILES = {"cifar10": (_CIFAR10_DIR, _CIFAR10_TAR), "cifar100": (_CIFAR100_DIR, _CIFAR100_TAR)}


def _official_cifar(dataset: str, root: Path, folder: str, archive: str, download: bool) -> Path | None:
    """The official extracted folder, else the official archive (fetched and extracted if ``download``)."""
    if (root / folder).is_dir():
        return root / folder
    if download:
        tar = dl.fetch(dataset, archive, root)
        dl.extract_tar(tar, root)
        if not (root / folder).is_dir():
            raise DatasetError(f"{tar} did not contain the folder {folder}/; delete it and download it again")
        return root / folder
    return root / archive if (root / archive).is_file() else None


def _read_cifar(source: Path, folder: str, members: list[str], label_key: str,
                num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    batches = read_cifar_members(source, folder, members)
    arrays = [cifar_arrays(batches[m], label_key, num_classes, f"{source}/{m}") for m in members]
    if len(arrays) == 1:
        return arrays[0]
    return np.concatenate([a[0] for a in arrays]), np.concatenate([a[1] for a in arrays])


def _cifar10_train_members(split: str) -> tuple[list[str], str]:
    """Which of the five training batches a split needs: valid is exactly batch 5 (images 40,000-49,999)."""
    if split == "train":
        return [f"data_batch_{k}" for k in range(1, 5)], "official training images 0-39,999"
    if split == "valid":
        return ["data_batch_5"], "official training images 40,000-49,999"
    return [f"data_batch_{k}" for k in range(1, 6)], "all 50,000 official training images"


def _load_cifar10(split: str, root: Path, download: bool) -> LabeledImages:
    name = "cifar10"
    if split in ("train", "valid", "train+valid"):
        members, what = _cifar10_train_members(split)
        folder = _CIFAR10_DIR
        source = _official_cifar(name, root, _CIFAR10_DIR, _CIFAR10_TAR, download=False)
        if source is None and (root / _LOSSLESS_TRAIN_DIR).is_dir():  # exact, so no need to download
            folder = _LOSSLESS_TRAIN_DIR
            source = root / folder
            what += " (lossless copy: exact pixels and labels)"
        source = source or _official_cifar(name, root, _CIFAR10_DIR, _CIFAR10_TAR, download)
        if source is None:
            raise _missing(name, split, root / _CIFAR10_DIR, root / _CIFAR10_TAR, root,
                           f" So are {_CIFAR10_TAR} and the lossless copy {_LOSSLESS_TRAIN_DIR}/.")
        x, y = _read_cifar(source, folder, members, "labels", 10)
        return _result(name, split, x, y, CIFAR10_CLASSES, what, source)

    if split == "test-jpeg75":
        path = root / _JPEG75_DIR / "test_batch"
        if not path.is_file():
            problem = (f"cifar10 'test-jpeg75' needs {path}, which is missing. It is this project's JPEG copy of "
                       "the test set and cannot be downloaded;")
            raise DatasetError(f"{problem} use split='test' with download=True for the official test set.",
                               cli=f"{problem} use the split test for the official test set, after `nin data "
                                   f"download cifar10 --data-dir {root}`.")
        x, y = _read_cifar(path.parent, _JPEG75_DIR, ["test_batch"], "labels", 10)
        what = ("LOSSY JPEG-75 copy, not the official test set: decoded from quality-75 JPEGs, entries "
                "0-999 in the official order, 1,000-9,999 grouped by class")
        return _result(name, split, x, y, CIFAR10_CLASSES, what, path.parent, lossy=True)

    source = _official_cifar(name, root, _CIFAR10_DIR, _CIFAR10_TAR, download)
    if split == "test-lossless-1000":
        what = "official test images 0-999 (exact)"
        if source is None and (root / _LOSSLESS_TEST_NPZ).is_file():
            x, y = read_npz_images(root / _LOSSLESS_TEST_NPZ, 10)
            if len(y) != 1000:
                raise DatasetError(f"{root / _LOSSLESS_TEST_NPZ}: expected 1,000 images, found {len(y):,}")
            return _result(name, split, x, y, CIFAR10_CLASSES, what, root / _LOSSLESS_TEST_NPZ)
        if source is None:
            raise _missing(name, split, root / _CIFAR10_DIR / "test_batch", root / _CIFAR10_TAR, root,
                           f" So are {_CIFAR10_TAR} and {_LOSSLESS_TEST_NPZ}.")
        x, y = _read_cifar(source, _CIFAR10_DIR, ["test_batch"], "labels", 10)
        return _result(name, split, x[:1000].copy(), y[:1000].copy(), CIFAR10_CLASSES, what, source)

    if source is None:  # split == "test"
        problem = (f"cifar10 'test' needs the official test batch: neither {root / _CIFAR10_DIR / 'test_batch'} nor "
                   f"{root / _CIFAR10_TAR} exists. This root has no official CIFAR-10 test set. Use")
        url = f"{dl.MIRRORS[name][0]}{_CIFAR10_TAR}"
        raise DatasetError(
            f"{problem} split='test-lossless-1000' (official test images 0-999, exact) or split='test-jpeg75' (all "
            f"10,000, LOSSY JPEG-75 copy), or pass download=True to fetch the official archive ({url}) into a "
            "writable root.",
            cli=f"{problem} the split test-lossless-1000 (official test images 0-999, exact) or test-jpeg75 (all "
                f"10,000, LOSSY JPEG-75 copy) (--split of nin eval and explain, test_splits of a recipe), or run "
                f"`nin data download cifar10 --data-dir {root}` to fetch the official archive ({url}).")
    x, y = _read_cifar(source, _CIFAR10_DIR, ["test_batch"], "labels", 10)
    return _result(name, split, x, y, CIFAR10_CLASSES, "the official test images", source)


def _load_cifar100(split: str, root: Path, download: bool) -> LabeledImages:
    name = "cifar100"
    source = _official_cifar(name, root, _CIFAR100_DIR, _CIFAR100_TAR, download)
    if source is None:
        raise _missing(name, split, root / _CIFAR100_DIR, root / _CIFAR100_TAR, root, f" So is {_CIFAR100_TAR}.")
    part = "test" if split == "test" else "train"
    batches = read_cifar_members(source, _CIFAR100_DIR, [part, "meta"])
    classes = cifar_label_names(batches["meta"], "fine_label_names", 100, f"{source}/meta")
    x, y = cifar_arrays(batches[part], "fine_labels", 100, f"{source}/{part}")
    if split == "test":
        return _result(name, split, x, y, classes, "the official test images (fine labels)", source)
    x, y, what = _train_valid(split, x, y, source)
    return _result(name, split, x, y, classes, what + " (fine labels)", source)


# ----------------------------------------------------------------------------------- your own images

def _load_folder(split: str, root: str | os.PathLike | None, image_size: int | None) -> LabeledImages:
    if root is None:  # $NIN_DATA and the cache hold the paper's datasets, never one's class folders
        problem = "the folder dataset reads your own images: a folder of class folders (PATH/CLASS/IMAGE.png);"
        raise DatasetError(f"{problem} give it as root=", cli=f"{problem} give it with --data-dir PATH")
    base = Path(root).expanduser()
    x, y, classes, what = read_folder(base, split, image_size or DEFAULT_IMAGE_SIZE)
    return _result("folder", split, x, y, classes, what, base)


# ------------------------------------------------------------------------------------------- SVHN

def _svhn_file(split: str, folder: Path, filename: str, download: bool) -> Path:
    if download:
        return dl.fetch("svhn", filename, folder)
    path = folder / filename
    if not path.is_file():
        raise _missing("svhn", split, path, path, folder.parent)
    return path


def svhn_valid_indices(labels: np.ndarray, per_class: int, rng: np.random.RandomState) -> np.ndarray:
    """Sorted indices of ``per_class`` validation images per class, chosen as pylearn2 did.

    pylearn2 (``SVHN.make_data``) walks the file's labels 1..10 (digits 1-9, then 0 stored as 10),
    shuffles each class's indices with ``numpy.random.RandomState(322)`` and keeps the first
    ``per_class``; the same stream continues from train (400 per class) to extra (200 per class).
    Reproducing it gives the same 6,000 validation images as pylearn2's maxout experiments, which NIN
    followed (numpy's legacy RandomState stream is frozen across versions).
    """
    chosen = []
    for digit in (*range(1, 10), 0):
        index = np.flatnonzero(labels == digit)
        rng.shuffle(index)
        chosen.append(index[:per_class])
    return np.sort(np.concatenate(chosen))


def _load_svhn(split: str, folder: Path, download: bool) -> LabeledImages:
    name = "svhn"
    if split == "test":
        path = _svhn_file(split, folder, "test_32x32.mat", download)
        x_hwcn, y = read_svhn_mat(path)
        x = np.empty((len(y), 3, 32, 32), dtype=np.uint8)
        svhn_to_nchw(x_hwcn, np.arange(len(y)), x)
        return _result(name, split, x, y, DIGITS, "the official test images", folder)

    # train / valid / train+valid all need extra_32x32.mat: read one file at a time to bound memory.
    rng = np.random.RandomState(SVHN_VALID_SEED)
    xs, ys = [], []
    for filename, per_class in SVHN_VALID_PER_CLASS.items():
        path = _svhn_file(split, folder, filename, download)
        x_hwcn, y = read_svhn_mat(path)
        if split == "train+valid":
            keep = np.arange(len(y))
        else:
            valid = svhn_valid_indices(y, per_class, rng)
            if len(valid) != 10 * per_class:
                raise DatasetError(f"{path}: fewer than {per_class} images of some class; this is not the "
                                   "official file; delete it and download it again")
            keep = valid if split == "valid" else np.setdiff1d(np.arange(len(y)), valid, assume_unique=True)
        part = np.empty((len(keep), 3, 32, 32), dtype=np.uint8)
        svhn_to_nchw(x_hwcn, keep, part)
        del x_hwcn
        xs.append(part)
        ys.append(y[keep])
    what = {
        "train": "train_32x32.mat + extra_32x32.mat minus the 6,000 validation images",
        "valid": "400 per class from train_32x32.mat + 200 per class from extra_32x32.mat (pylearn2's "
                 "selection, RandomState(322)), each part in file order",
        "train+valid": "all of train_32x32.mat + extra_32x32.mat",
    }[split]
    return _result(name, split, np.concatenate(xs), np.concatenate(ys), DIGITS, what, folder)
