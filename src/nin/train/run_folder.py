"""The run folder: one training process at a time, and an existing run replaced only when asked.

Two ``nin train`` with the same ``--out`` would interleave their files without a word, and a new run
over an old one would replace its checkpoint (two epochs of work) with its own. So a run locks its
folder (``nin.utils.runlock``) before it reads or writes anything there, and a folder that holds a
run's records takes ``--resume`` (continue it) or ``--overwrite`` (replace it).
"""
from __future__ import annotations

import os
from pathlib import Path

from nin.errors import NinError
from nin.utils.atomic import remove_partial_writes
from nin.utils.runlock import FolderLock, lock_folder

RUN_FILES = ("last.pt", "metrics.jsonl", "curves.png", "recipe.toml", "summary.json")
RECORDS = ("last.pt", "metrics.jsonl", "summary.json")  # what a run leaves that is worth keeping


class RunFolderError(NinError, ValueError):
    """A run folder that this run may not use as asked; the message says which option to give."""


def recorded_run(folder: str | os.PathLike) -> list[str]:
    """The records of a run in ``folder`` (none: no run there to lose)."""
    return [name for name in RECORDS if (Path(folder) / name).exists()]


def claim_run_folder(folder: str | os.PathLike, *, resume: bool, overwrite: bool) -> FolderLock:
    """Lock ``folder``, delete what killed writes of a run left there, and refuse to start a new run over a
    recorded one unless ``resume`` or ``overwrite`` says what to do with it."""
    if resume and overwrite:
        raise RunFolderError("--resume continues the run in the folder and --overwrite replaces it; give one of them")
    lock = lock_folder(folder)
    try:
        remove_partial_writes(folder, RUN_FILES)
        found = recorded_run(folder)
        if found and not (resume or overwrite):
            raise RunFolderError(f"{folder} already holds a run ({', '.join(found)}); continue it with --resume, "
                                 "replace it with --overwrite, or choose another --out")
    except BaseException:
        lock.release()
        raise
    return lock


def clear_run(folder: str | os.PathLike) -> None:
    """Delete a replaced run's files (``--overwrite``), so that none of them is mistaken for the new run's."""
    for name in RUN_FILES:
        (Path(folder) / name).unlink(missing_ok=True)
