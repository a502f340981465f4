"""Fetch the official dataset files: mirror fallback, MD5 check before use, atomic writes, safe extraction.

Only ``urllib`` is used. ``MIRRORS`` is a module-level table on purpose: tests (and users behind a
local mirror) point it at ``http://127.0.0.1:...`` or ``file://`` URLs instead of the internet.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tarfile
import tempfile
import urllib.request
import zlib
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from nin.data.formats import DatasetError

# Base URLs tried in order; a file's URL is the base followed by its name.
MIRRORS: dict[str, list[str]] = {
    "mnist": ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"],
    "fashion-mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
    "cifar10": ["https://www.cs.toronto.edu/~kriz/"],
    "cifar100": ["https://www.cs.toronto.edu/~kriz/"],
    "svhn": ["http://ufldl.stanford.edu/housenumbers/"],
}

# The published MD5 of every official file (the lists torchvision checks against).
CHECKSUMS: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    "cifar10": {"cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"},
    "cifar100": {"cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85"},
    "svhn": {
        "train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
        "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3",
        "extra_32x32.mat": "a93ce644f1a588dc4d68dda5feec44a7",
    },
}

_CHUNK = 1 << 20
_TIMEOUT_S = 60.0
# What a failed transfer raises: URLError/HTTPError/timeouts are OSErrors, a bad URL a ValueError,
# a connection cut mid-body an http.client.IncompleteRead.
_TRANSFER_ERRORS = (OSError, ValueError, http.client.HTTPException)


def md5sum(path: str | os.PathLike) -> str:
    """Hex MD5 of a file, read in chunks."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def fetch(dataset: str, filename: str, folder: Path, *, progress: bool = True) -> Path:
    """Make sure ``folder/filename`` is the official file of ``dataset``, downloading it if needed."""
    md5 = CHECKSUMS[dataset][filename]
    return download_file([base + filename for base in MIRRORS[dataset]], folder / filename, md5,
                         progress=progress)


def download_file(urls: Sequence[str], dest: Path, md5: str, *, progress: bool = True) -> Path:
    """Download ``dest`` from the first of ``urls`` that yields a file with the expected MD5.

    An existing ``dest`` with the right MD5 is kept without touching the network. The bytes go to a
    temporary file next to ``dest`` and are renamed into place only after the checksum matched, so an
    interrupted or corrupted download never leaves a half-written ``dest``.
    """
    if dest.is_file() and md5sum(dest) == md5:
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _unwritable(f"cannot create {dest.parent} to download {dest.name} into ({e})") from e
    failures = []
    for url in urls:
        tmp = _temp_beside(dest)
        try:
            _stream(url, tmp, dest.name, progress)
        except _TRANSFER_ERRORS as e:
            tmp.unlink(missing_ok=True)
            failures.append(f"{url}: {e}")
            continue
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        got = md5sum(tmp)
        if got == md5:
            os.replace(tmp, dest)
            return dest
        tmp.unlink()
        failures.append(f"{url}: downloaded, but its md5 is {got}")
    problem = (f"could not download {dest.name} ({'; '.join(failures) or 'no URL configured'}). If this machine is "
               f"offline, download {urls[0] if urls else dest.name} on one with internet, check that its md5 is {md5} "
               f"and put it at {dest}, then")
    raise DatasetError(f"{problem} call load_dataset again.", cli=f"{problem} run the command again.")


def _unwritable(problem: str) -> DatasetError:
    return DatasetError(f"{problem}; pass a writable root= (or set NIN_DATA)",
                        cli=f"{problem}; pass a writable --data-dir (or set $NIN_DATA)")


def _temp_beside(dest: Path) -> Path:
    """A new empty file in ``dest``'s folder (same file system, so the final rename is atomic)."""
    try:
        fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    except OSError as e:
        raise _unwritable(f"cannot write {dest.name} into {dest.parent} ({e})") from e
    os.close(fd)
    return Path(name)


def _stream(url: str, path: Path, desc: str, progress: bool) -> None:
    """Copy ``url`` into ``path`` with a progress bar; a short body is an error."""
    with open(path, "wb") as out, urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length else None
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                  disable=not (progress and sys.stderr.isatty()), leave=False) as bar:
            for block in iter(lambda: response.read(_CHUNK), b""):
                out.write(block)
                bar.update(len(block))
        if total is not None and out.tell() != total:
            raise OSError(f"the transfer stopped after {out.tell():,} of {total:,} bytes")


def extract_tar(archive: Path, dest_dir: Path) -> None:
    """Extract a ``.tar.gz`` into ``dest_dir``, refusing any member that would land outside it.

    Absolute names, ``..`` components, links whose target leaves ``dest_dir`` and device or FIFO
    members are rejected before anything is written. The members are first extracted into a
    temporary folder inside ``dest_dir`` and each top-level entry is then renamed into place, so an
    interrupted extraction leaves no half-filled dataset folder.
    """
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            for m in members:
                _check_member(m, archive)
            with tempfile.TemporaryDirectory(dir=dest_dir, prefix=f".{archive.name}.") as tmp:
                if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4: belt and braces
                    tar.extractall(tmp, members=members, filter="data")
                else:  # pragma: no cover - older Pythons; every member was checked above
                    tar.extractall(tmp, members=members)
                entries = list(Path(tmp).iterdir())
                clashes = [str(dest_dir / e.name) for e in entries if (dest_dir / e.name).exists()]
                if clashes:
                    raise DatasetError(f"{archive}: extracting it would overwrite {', '.join(clashes)}; move "
                                       "that away (it is incomplete or damaged) and try again")
                for entry in entries:
                    os.replace(entry, dest_dir / entry.name)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DatasetError(f"{archive}: cannot extract it ({type(e).__name__}: {e}); delete it and download "
                           "it again") from e


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    path = PurePosixPath(member.name)
    problem = None
    if path.is_absolute():
        problem = "has an absolute path"
    elif ".." in path.parts:
        problem = "climbs out with '..'"
    elif member.issym() or member.islnk():
        target = PurePosixPath(member.linkname)
        resolved = target if member.islnk() else path.parent / target
        if target.is_absolute() or ".." in PurePosixPath(os.path.normpath(resolved)).parts:
            problem = f"is a link to {member.linkname!r}, outside the archive's folder"
    elif not (member.isfile() or member.isdir()):
        problem = "is a device, FIFO or other special file"
    if problem:
        raise DatasetError(f"{archive}: member {member.name!r} {problem}; refusing to extract this archive. "
                           "Delete it and download it again from the official URL.")
