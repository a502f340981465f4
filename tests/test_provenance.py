"""A record names its code and its machine: its source digest (same files, same digest; a change, another), its CPU."""
from __future__ import annotations

import platform
import shutil
from pathlib import Path

import nin
from nin.utils.hardware import cpu_name
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


def test_the_cpu_is_named_with_its_family_and_model_so_that_zen_4_and_zen_5_records_differ() -> None:
    zen4 = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC\n\n" \
           "processor\t: 1\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: other\n"
    assert cpu_name(zen4) == "AMD EPYC (family 25, model 17)"  # the first processor's block only
    arm = "processor\t: 0\nBogoMIPS\t: 50.00\nCPU implementer\t: 0x41\nmodel name\t: Neoverse-N1\n"
    assert cpu_name(arm) == "Neoverse-N1"
    assert cpu_name("") == (platform.processor() or platform.machine())
