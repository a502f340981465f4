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
import math
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
OWN_WEIGHTS = ("to use weights of your own, save model.state_dict() and wrap it into a weights file with "
               "nin.inference.weights.weights_from_state_dict (docs/convert.md)")


class CheckpointError(NinError, ValueError):
    """A checkpoint that cannot be used; the message names the file and what to do."""


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` atomically: a crash mid-write leaves the previous checkpoint intact."""
    state = {"format": FORMAT, **state}
    atomic_write(path, lambda f: torch.save({**state, _DIGEST: content_digest(state)}, f))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint without executing code from it."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder; give the .pt file in it (e.g. {path / 'last.pt'})")
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist; give the path of a .pt file written by "
                              "`nin train`") from None
    except OSError as err:  # the file may be perfectly good: say what stops us, not that it is damaged
        raise CheckpointError(f"cannot read checkpoint {path}: {err.strerror}; check its permissions and those of "
                              "its folders") from None
    _check_zip(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"checkpoint {path} was refused: it holds objects other than tensors and plain data ({err}). "
            f"nin never unpickles arbitrary objects; only load checkpoints written by `nin train`; "
            f"{OWN_WEIGHTS}") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, AttributeError, TypeError) as err:
        # what torch's restricted unpickler raises on a pickle it cannot follow
        raise CheckpointError(f"checkpoint {path} is unreadable (truncated or not a checkpoint): {err}; "
                              f"{_REMEDY}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = _state_dict_in(state)
        hint = f": it holds {found}; {OWN_WEIGHTS}" if found else ""
        raise CheckpointError(f"{path} is not a nin checkpoint (expected format {FORMAT!r}){hint}")
    saved = state.pop(_DIGEST, None)
    if saved is not None and saved != content_digest(state):
        raise CheckpointError(f"checkpoint {path} is damaged: its content does not match the SHA-256 saved with "
                              f"it; {_REMEDY}")
    return state


def _is_state_dict(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(v, torch.Tensor) for v in value.values())


def _state_dict_in(value: Any) -> str | None:
    """How a file that ``torch.save`` wrote holds a plain ``state_dict``, if it does (for the hint)."""
    if _is_state_dict(value):
        return f"a bare state_dict of {len(value)} tensors"
    if isinstance(value, dict):
        key = next((k for k, v in value.items() if _is_state_dict(v)), None)
        if key is not None:
            return f"a state_dict under the key {key!r}"
    return None


def nonfinite(value: Any, name: str) -> list[tuple[str, str]]:
    """(name, "NaN" or "Inf") for each tensor or number in ``value``, nested in dicts and lists (``name.key.0``), that
    holds NaN or Inf: weights or statistics that would make every output NaN, or a silently wrong number."""
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point() or bool(torch.isfinite(value).all()):
            return []
        return [(name, "NaN" if bool(torch.isnan(value).any()) else "Inf")]
    if isinstance(value, float):
        return [] if math.isfinite(value) else [(name, "NaN" if math.isnan(value) else "Inf")]
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    return [bad for key, item in items for bad in nonfinite(item, f"{name}.{key}")]


def describe_nonfinite(found: list[tuple[str, str]]) -> str:
    """``NaN in model.conv.weight, Inf in ...`` for messages (three at most)."""
    more = f" and {len(found) - 3} more" if len(found) > 3 else ""
    return ", ".join(f"{kind} in {name}" for name, kind in found[:3]) + more


def require_finite(state: dict[str, Any], path: str | os.PathLike, keys: tuple[str, ...]) -> None:
    """Refuse a checkpoint whose ``keys`` (weights, preprocessing, optimizer) hold NaN or Inf, naming them."""
    found = [bad for key in keys for bad in nonfinite(state.get(key), key)]
    if found:
        raise CheckpointError(f"checkpoint {path} holds {describe_nonfinite(found)}, so every result would be "
                              f"meaningless; {_REMEDY}")


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
