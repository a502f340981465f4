"""The source digest names the code of a record without git: same files, same digest; any change, another."""
from __future__ import annotations

import shutil
from pathlib import Path

import nin
from nin.utils.provenance import source_digest


def _tree(root: Path) -> Path:
    (root / "train").mkdir(parents=True)
    (root / "__init__.py").write_text("x = 1\n")
    (root / "train" / "loop.py").write_text("def fit():\n    return 2\n")
    (root / "recipes.toml").write_text('lr = 0.02\n')
    return root


def test_the_same_files_give_the_same_digest_wherever_they_lie(tmp_path: Path) -> None:
    a = _tree(tmp_path / "a")
    b = tmp_path / "elsewhere" / "b"
    shutil.copytree(a, b)
    (b / "__pycache__").mkdir()
    (b / "__pycache__" / "loop.cpython-311.pyc").write_bytes(b"\x00compiled")  # not source
    (b / "notes.png").write_bytes(b"\x89PNG")
    assert source_digest(a) == source_digest(b)
    assert len(source_digest(a)) == 16 and int(source_digest(a), 16) >= 0


def test_a_changed_byte_a_renamed_file_or_a_new_file_changes_the_digest(tmp_path: Path) -> None:
    base = source_digest(_tree(tmp_path / "base"))
    edited = _tree(tmp_path / "edited")
    (edited / "train" / "loop.py").write_text("def fit():\n    return 3\n")
    renamed = _tree(tmp_path / "renamed")
    (renamed / "train" / "loop.py").rename(renamed / "train" / "engine.py")
    added = _tree(tmp_path / "added")
    (added / "train" / "schedule.py").write_text("")
    recipe = _tree(tmp_path / "recipe")
    (recipe / "recipes.toml").write_text("lr = 0.01\n")
    digests = {base, *(source_digest(t) for t in (edited, renamed, added, recipe))}
    assert len(digests) == 5


def test_the_default_is_the_installed_package() -> None:
    assert source_digest() == source_digest(Path(nin.__file__).parent)
