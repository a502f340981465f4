"""One process at a time in a folder: an exclusive lock that the kernel drops when its holder dies.

The lock is ``flock`` on a file ``.nin.lock`` in the folder, which also records who holds it (process
id, host, start time, command) for the error a second process gets. Because the kernel releases an
``flock`` when its process ends in any way (SIGKILL included), a lock file left by a dead process is
stale by construction: the next process locks it and takes it over. POSIX only (Linux, macOS); on
network file systems it is as good as their ``flock``.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nin.errors import NinError

LOCK_NAME = ".nin.lock"


class FolderBusyError(NinError, RuntimeError):
    """Another live process holds the folder; the message names it."""


def _holder(fd: int) -> dict[str, Any] | None:
    """The record in a lock file, or None if it is empty or unreadable (its writer was cut short)."""
    try:
        record = json.loads(os.pread(fd, 4096, 0) or b"null")
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("pid"), int) else None


def describe_holder(record: dict[str, Any] | None) -> str:
    """``process 1234 on host (since 2026-01-01 12:00 UTC: nin train ...)``, for messages."""
    if record is None:
        return "another process"
    return (f"process {record['pid']} on {record.get('host', '?')} (since {record.get('since', '?')}: "
            f"{record.get('command', '?')})")


class FolderLock:
    """A held lock; ``release()`` (or leaving a ``with`` block) gives it up and removes the lock file.

    ``took_over`` is the record of a process that had locked the folder and died without releasing it.
    """

    def __init__(self, folder: Path, fd: int, took_over: dict[str, Any] | None, created: bool) -> None:
        self.folder = folder
        self.took_over = took_over
        self._fd: int | None = fd
        self._created = created

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Give the lock up. The file goes while it is still locked, so a process that opened it meanwhile sees
        that it was replaced (see ``lock_folder``); a folder this lock created and nothing else filled goes too."""
        if self._fd is None:
            return
        try:
            (self.folder / LOCK_NAME).unlink(missing_ok=True)
        except OSError:
            pass  # a read-only or vanished folder: the next holder takes the file over
        os.close(self._fd)
        self._fd = None
        if self._created:
            try:
                self.folder.rmdir()
            except OSError:
                pass  # not empty: the run wrote something

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_folder(folder: str | os.PathLike) -> FolderLock:
    """Lock ``folder`` (created if missing) for this process, or raise FolderBusyError naming the holder.

    OSErrors (a read-only file system, a denied permission) come through unchanged, naming the file.
    """
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise FolderBusyError(f"{folder} is in use by {describe_holder(holder)}; wait until it ends or stop it, "
                                  "or write to another folder") from None
        try:  # the holder may have released and removed the file between our open and our lock
            current = os.stat(path)
            here = os.fstat(fd)
            if (current.st_dev, current.st_ino) == (here.st_dev, here.st_ino):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    lock = FolderLock(folder, fd, _holder(fd), created)
    record = {"pid": os.getpid(), "host": socket.gethostname(),
              "since": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
              "command": " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]])}
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
    except OSError:
        lock.release()
        raise
    return lock
