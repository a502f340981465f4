"""Checkpoints: everything needed to resume exactly or to evaluate with the same preprocessing.

Saved with ``torch.save`` and loaded with ``weights_only=True``, so loading never runs code from
the file: only tensors, numbers, strings, lists and dicts are accepted.

A damaged file is an error, never a silently different network. ``torch.load`` checks neither the
CRC-32 that ``torch.save`` writes for every zip member nor much else: a flipped byte in the weights
loads as a different weight, and some damage to the zip directory makes it return bytes other than
the ones saved. So loading checks every member's CRC-32 and kind first, and a SHA-256 of the content
(every key, value and tensor byte), saved with it, after.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

import torch

from nin.errors import NinError
from nin.utils.atomic import atomic_write

FORMAT = "nin-checkpoint-v1"
_DIGEST = "sha256"  # the key of the content digest (checkpoints written before it existed have none)
_MSDOS_DIR = 0x10  # the directory bit of a zip member's external attributes
_REMEDY = "delete it and train again (or resume from a good copy)"


class CheckpointError(NinError, ValueError):
    """A checkpoint that cannot be used; the message names the file and what to do."""


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` atomically: a crash mid-write leaves the previous checkpoint intact."""
    state = {"format": FORMAT, **state}
    atomic_write(path, lambda f: torch.save({**state, _DIGEST: content_digest(state)}, f))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint without executing code from it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; give the path of a .pt file written by `nin train`")
    _check_zip(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"checkpoint {path} was refused: it holds objects other than tensors and plain data ({err}). "
            "nin never unpickles arbitrary objects; only load checkpoints written by `nin train`") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, AttributeError, TypeError) as err:
        # what torch's restricted unpickler raises on a pickle it cannot follow
        raise CheckpointError(f"checkpoint {path} is unreadable (truncated or not a checkpoint): {err}; "
                              f"{_REMEDY}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a nin checkpoint (expected format {FORMAT!r})")
    saved = state.pop(_DIGEST, None)
    if saved is not None and saved != content_digest(state):
        raise CheckpointError(f"checkpoint {path} is damaged: its content does not match the SHA-256 saved with "
                              f"it; {_REMEDY}")
    return state


def _check_zip(path: Path) -> None:
    """Refuse a file whose zip members do not match their CRC-32 or are not files, before anything is unpickled."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            directory = next((m.filename for m in archive.infolist()
                              if m.is_dir() or m.external_attr & _MSDOS_DIR), None)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, RuntimeError,
            NotImplementedError, struct.error, zlib.error) as err:  # what zipfile raises on damaged headers
        raise CheckpointError(f"checkpoint {path} is unreadable (truncated or not a checkpoint): {err}; "
                              f"{_REMEDY}") from None
    if bad is not None:
        raise CheckpointError(f"checkpoint {path} is damaged: its member {bad} fails its CRC-32 or header check; "
                              f"{_REMEDY}")
    if directory is not None:  # torch.save writes none; torch.load would fill such a tensor with stale memory
        raise CheckpointError(f"checkpoint {path} is damaged: its member {directory} is marked as a directory; "
                              f"{_REMEDY}")


def content_digest(value: Any) -> str:
    """SHA-256 of a checkpoint's content: structure, keys, numbers, strings and tensor bytes, in order."""
    h = hashlib.sha256()
    _feed(h, value)
    return h.hexdigest()


def _feed(h: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(value, dict):
        h.update(f"{{{len(value)}".encode())
        for key, item in value.items():
            _feed(h, key)
            _feed(h, item)
    elif isinstance(value, (list, tuple)):
        h.update(f"[{len(value)}".encode())
        for item in value:
            _feed(h, item)
    else:  # str, int, float, bool, None: repr is exact and tells the types apart
        text = repr(value)
        h.update(f"{type(value).__name__}{len(text)}:{text}".encode())
