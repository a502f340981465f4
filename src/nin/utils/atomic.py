"""Write files so that a crash or a failed write leaves either the old file or the new one, never half of one."""
from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, TypeVar, cast

_T = TypeVar("_T")

# The names ``tempfile.mkstemp(prefix=".NAME.", suffix=".tmp")`` gives: a dot, the name, 8 random characters.
_TEMP_NAME = re.compile(r"\.(.+)\.[A-Za-z0-9_]{8}\.tmp")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class WriteError(OSError):
    """Writing ``filename`` failed for the reason its ``errno`` gives; the file keeps its previous content."""


class _Writer:
    """The temporary file as ``write`` sees it. It keeps the OSError of a failed write, which torch's zip writer
    replaces with ``RuntimeError: ... unexpected pos``, and it has no ``fileno``, so that Pillow and the others
    write through it rather than around it."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self._file.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self._file.flush()

    def tell(self) -> int:
        return self._file.tell()

    def writable(self) -> bool:
        return True


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write`` on a temporary file beside ``path``, fsync it, then rename it over ``path``.

    Any OSError on the way (a full disk, a read-only file system, a denied permission) is raised as a WriteError
    of the same errno naming ``path``, even where the library that wrote wrapped it in another exception; the
    temporary file is removed and ``path`` keeps its old content.
    """
    atomic_write_all({path: write})


def atomic_write_all(writes: Mapping[str | os.PathLike, Callable[[IO[bytes]], None]]) -> None:
    """``atomic_write`` for files that belong together (weights and their sidecar): every file is written to its
    temporary file first, and only when all are complete are they renamed, so a failed write replaces none."""
    done: list[tuple[str, Path]] = []
    try:
        for path, write in writes.items():
            done.append((_write_temporary(Path(path), write), Path(path)))
        for tmp, path in done:
            _named(path, lambda: os.replace(tmp, path))
    except BaseException:
        for tmp, _ in done:
            Path(tmp).unlink(missing_ok=True)
        raise


def _named(path: Path, action: Callable[[], _T]) -> _T:
    """Run ``action``; an OSError becomes a WriteError naming ``path``, the file the user asked for."""
    try:
        return action()
    except OSError as err:
        if err.errno is None or isinstance(err, WriteError):
            raise
        raise WriteError(err.errno, os.strerror(err.errno), str(path)) from err


def _write_temporary(path: Path, write: Callable[[IO[bytes]], None]) -> str:
    """The name of a complete, fsynced temporary file beside ``path`` that ``write`` filled."""
    _named(path, lambda: path.parent.mkdir(parents=True, exist_ok=True))
    fd, tmp = _named(path, lambda: tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes files owner-only; give them the usual permissions
            writer = _Writer(f)
            try:
                write(cast(IO[bytes], writer))  # a file for every use that write() makes of one
            except Exception:
                if writer.error is None:
                    raise
                raise writer.error from None  # the OSError that the writing library wrapped in its own exception
            f.flush()
            os.fsync(f.fileno())
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno is not None:
            raise WriteError(err.errno, os.strerror(err.errno), str(path)) from err
        raise
    return tmp


def remove_partial_writes(folder: str | os.PathLike, names: Iterable[str]) -> list[Path]:
    """Delete the temporary files that writes of ``names`` in ``folder`` left when a kill cut them short.

    ``atomic_write`` removes its temporary file after an exception, but nothing runs after SIGKILL, so
    every kill mid-write would leave one behind for good. Only the temporary files of ``names`` go: call
    this only while no other process writes those names in ``folder`` (a live writer's file looks the same).
    """
    names = set(names)
    stale = [p for p in Path(folder).glob(".*.tmp")
             if (match := _TEMP_NAME.fullmatch(p.name)) and match.group(1) in names and p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())
