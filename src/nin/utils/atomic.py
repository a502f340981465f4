"""Write files so that a crash leaves either the old file or the new one, never half of one."""
from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

# The names ``tempfile.mkstemp(prefix=".NAME.", suffix=".tmp")`` gives: a dot, the name, 8 random characters.
_TEMP_NAME = re.compile(r"\..+\.[A-Za-z0-9_]{8}\.tmp")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write`` on a temporary file beside ``path``, fsync it, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes files owner-only; give them the usual permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno is not None and err.filename is None:
            # write() and fsync() errors (a full disk) do not say which file: name it for the message
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise


def remove_partial_writes(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of writes that a kill cut short (SIGKILL, power loss) in ``folder``.

    ``atomic_write`` removes its temporary file after an exception, but nothing runs after SIGKILL, so
    every kill mid-write would leave one behind for good. Call this only on a folder that no other
    process is writing to: a live writer's temporary file looks the same.
    """
    stale = [p for p in Path(folder).glob(".*.tmp") if _TEMP_NAME.fullmatch(p.name) and p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))
