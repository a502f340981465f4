"""Shared fixtures: the offline data folder (``$NIN_DATA``, else ``<repo>/../shared/data``)."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """Where the offline datasets live: ``$NIN_DATA`` if set, else ``../shared/data`` beside the repo."""
    env = os.environ.get("NIN_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The offline data folder; tests that need it skip (with the reason) when it is absent."""
    path = shared_data_dir().resolve()
    if not path.is_dir():
        pytest.skip(f"offline data folder {path} is absent: set NIN_DATA to the shared data folder")
    return path


@pytest.fixture(scope="session")
def shared_path(shared_data: Path) -> Callable[..., Path]:
    """``shared_path("mnist", "t10k-labels-idx1-ubyte.gz")``: that path, or skip when it is absent."""

    def get(*parts: str) -> Path:
        path = shared_data.joinpath(*parts)
        if not path.exists():
            pytest.skip(f"{path} is absent from the offline data folder")
        return path

    return get
