"""Readers for the official file formats: IDX (MNIST), CIFAR python pickles (folder or tar.gz), SVHN .mat.

Every reader checks what it reads and turns any failure into one :class:`DatasetError` that names the
file, says what was wrong and what to do, so a truncated download never surfaces as a bare
``EOFError`` from deep inside ``gzip`` or ``pickle``.
"""
from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from nin.errors import NinError

_REDOWNLOAD = "delete it and fetch it again (load_dataset(..., download=True) downloads missing files)"
_REDOWNLOAD_CLI = "delete it and fetch it again with `nin data download NAME` (NAME: its dataset)"

# Errors a parser raises on a damaged file; anything else (MemoryError, KeyboardInterrupt) propagates.
_PARSE_ERRORS = (
    OSError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError, ImportError,
    struct.error, zlib.error, pickle.UnpicklingError, tarfile.TarError, NotImplementedError,
)


class DatasetError(NinError):
    """A data file is missing, damaged or not what it claims to be; the message says which and what to do."""


def refetch(problem: str) -> DatasetError:
    """An error about a file that must be fetched again, with the remedy in Python's and the CLI's words."""
    return DatasetError(f"{problem}; {_REDOWNLOAD}.", cli=f"{problem}; {_REDOWNLOAD_CLI}.")


def damaged(path: Path | str, what: str) -> DatasetError:
    """The standard error for a file whose content is wrong."""
    return refetch(f"{path}: {what}. The file is damaged or not the official one")


# ---------------------------------------------------------------------------------------------- IDX

_IDX_UBYTE = 0x08


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read an IDX file of unsigned bytes (gzipped or not, told apart by content) with ``ndim`` dimensions.

    The magic number is ``0x0000 08 ndim`` (2049 for label files, 2051 for image files); the dimensions
    are big-endian uint32 and the payload must be exactly their product in bytes.
    """
    raw = path.read_bytes()
    try:
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise damaged(path, f"cannot decompress it ({type(e).__name__}: {e})") from e
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise damaged(path, f"only {len(raw)} bytes, shorter than the {header}-byte IDX header")
    magic = int.from_bytes(raw[:4], "big")
    expected = (_IDX_UBYTE << 8) | ndim
    if magic != expected:
        raise damaged(path, f"wrong IDX magic number {magic} (expected {expected}: unsigned bytes, {ndim}-D)")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    size = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header != size:
        raise damaged(path, f"header says shape {shape} = {size} bytes of data but the file holds "
                            f"{len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


# ------------------------------------------------------------------------------------ CIFAR pickles

# The only globals the official CIFAR pickles (and numpy arrays pickled by Python 3) need. Refusing
# everything else means a tampered pickle cannot run code when it is loaded.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR batch holds only "
                                         "numpy arrays, lists, numbers and strings")
        return super().find_class(module, name)


def _text(value: object) -> str:
    return value.decode("latin1") if isinstance(value, bytes) else str(value)


def read_cifar_pickle(data: bytes, where: str) -> dict[str, object]:
    """Unpickle one CIFAR batch or meta file (Python 2 format) into a dict with ``str`` keys.

    ``encoding="bytes"`` keeps the Python 2 strings as bytes (so numpy gets its raw buffers back);
    keys may then be bytes or str and are normalised to str.
    """
    try:
        obj = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
    except _PARSE_ERRORS as e:
        raise damaged(where, f"not a readable CIFAR pickle ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise damaged(where, f"expected a pickled dict, found {type(obj).__name__}")
    return {_text(k): v for k, v in obj.items()}


def cifar_arrays(batch: dict[str, object], label_key: str, num_classes: int,
                 where: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 from an unpickled CIFAR batch, checked."""
    if "data" not in batch or label_key not in batch:
        raise damaged(where, f"keys {sorted(batch)} lack 'data' or {label_key!r}")
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise damaged(where, f"'data' must be a uint8 array of shape (N, 3072), found {desc}")
    try:
        labels = np.asarray(batch[label_key], dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise damaged(where, f"{label_key!r} is not a list of integers") from e
    if len(labels) != len(data):
        raise damaged(where, f"{len(data)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise damaged(where, f"labels must lie in 0..{num_classes - 1}, found {labels.min()}..{labels.max()}")
    return np.ascontiguousarray(data.reshape(-1, 3, 32, 32)), labels


def cifar_label_names(meta: dict[str, object], key: str, num_classes: int, where: str) -> list[str]:
    """Class names from a CIFAR meta file (``label_names`` / ``fine_label_names``)."""
    names = meta.get(key)
    if not isinstance(names, list) or len(names) != num_classes:
        raise damaged(where, f"{key!r} must list {num_classes} class names")
    return [_text(n) for n in names]


def read_cifar_members(source: Path, folder: str, members: Iterable[str]) -> dict[str, dict[str, object]]:
    """Unpickle ``members`` of the official CIFAR folder ``folder``, read from ``source``.

    ``source`` is either the extracted folder itself or the official ``.tar.gz``; an archive is read
    in one pass without extracting anything to disk.
    """
    wanted = list(members)
    if source.is_dir():
        out = {}
        for name in wanted:
            path = source / name
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                raise refetch(f"{path} is missing: {source} should hold the official CIFAR files "
                              f"{', '.join(wanted)}") from None
            out[name] = read_cifar_pickle(data, str(path))
        return out
    found: dict[str, dict[str, object]] = {}
    try:
        with tarfile.open(source, "r:gz") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                short = name[len(folder) + 1:]
                if name.startswith(folder + "/") and short in wanted and member.isfile():
                    f = tar.extractfile(member)
                    assert f is not None  # a regular file always has a file object
                    found[short] = read_cifar_pickle(f.read(), f"{source}:{name}")
                    if len(found) == len(wanted):
                        break
    except _PARSE_ERRORS as e:
        raise damaged(source, f"not a readable .tar.gz archive ({type(e).__name__}: {e})") from e
    missing = [m for m in wanted if m not in found]
    if missing:
        raise damaged(source, f"the archive lacks {', '.join(f'{folder}/{m}' for m in missing)}")
    return found


# ----------------------------------------------------------------------------------------- SVHN .mat

def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``X`` as stored (32, 32, 3, N) uint8 (HWCN) and labels (N,) int64 in 0..9 (the file stores 0 as 10)."""
    try:
        from scipy.io import loadmat
    except ImportError as e:  # scipy is only needed for SVHN
        raise DatasetError(f"reading {path} needs scipy (SVHN ships as MATLAB files): pip install scipy") from e
    try:
        mat = loadmat(path, variable_names=["X", "y"])
    except _PARSE_ERRORS as e:
        raise damaged(path, f"not a readable MATLAB v5 file ({type(e).__name__}: {e})") from e
    x, y = mat.get("X"), mat.get("y")
    if not isinstance(y, np.ndarray) or y.size == 0 or y.ndim > 2 or (y.ndim == 2 and 1 not in y.shape):
        raise damaged(path, "variable 'y' must be a non-empty N×1 array of labels")
    y = y.reshape(-1).astype(np.int64)
    if y.min() < 1 or y.max() > 10:
        raise damaged(path, f"SVHN labels must lie in 1..10, found {y.min()}..{y.max()}")
    y[y == 10] = 0
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        desc = f"{x.dtype} array of shape {x.shape}" if isinstance(x, np.ndarray) else "nothing"
        raise damaged(path, f"variable 'X' must be a uint8 array of shape (32, 32, 3, N), found {desc}")
    if x.shape[3] != len(y):
        raise damaged(path, f"{x.shape[3]} images but {len(y)} labels")
    return x, y


def svhn_to_nchw(x_hwcn: np.ndarray, index: np.ndarray, out: np.ndarray, chunk: int = 32768) -> None:
    """Write images ``index`` of an HWCN array into ``out`` as NCHW, a chunk at a time to bound memory."""
    for start in range(0, len(index), chunk):
        sel = index[start:start + chunk]
        out[start:start + len(sel)] = x_hwcn[..., sel].transpose(3, 2, 0, 1)


# ----------------------------------------------------------------------------------------------- npz

def read_npz_images(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``x`` (N, H, W, C) uint8 and ``y`` from an ``.npz`` file, as NCHW uint8 and int64 labels."""
    try:
        with np.load(path, allow_pickle=False) as z:
            x, y = z["x"], z["y"]
    except _PARSE_ERRORS as e:
        raise damaged(path, f"not a readable .npz with arrays 'x' and 'y' ({type(e).__name__}: {e})") from e
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[0] != len(y) or y.ndim != 1:
        raise damaged(path, f"expected x uint8 (N, H, W, C) and y (N,), found x {x.dtype} {x.shape}, y {y.shape}")
    y = y.astype(np.int64)
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise damaged(path, f"labels must lie in 0..{num_classes - 1}")
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)), y
