"""Checkpoints: everything needed to resume exactly or to evaluate with the same preprocessing.

Saved with ``torch.save`` and loaded with ``weights_only=True``, so loading never runs code from
the file: only tensors, numbers, strings, lists and dicts are accepted.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from nin.atomic import atomic_write

FORMAT = "nin-checkpoint-v1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what to do."""


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` atomically: a crash mid-write leaves the previous checkpoint intact."""
    atomic_write(path, lambda f: torch.save({"format": FORMAT, **state}, f))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint without executing code from it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; give the path of a .pt file written by `nin train`")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"checkpoint {path} was refused: it holds objects other than tensors and plain data ({err}). "
            "nin never unpickles arbitrary objects; only load checkpoints written by `nin train`") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} is unreadable (truncated or not a checkpoint): {err}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a nin checkpoint (expected format {FORMAT!r})")
    return state
