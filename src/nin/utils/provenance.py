"""Which code wrote a record: the git commit, and a digest of the package's own files.

The digest does not need git: a tree copied to a lent machine can carry stale git metadata, and then
only the digest names the code that ran (compare it with ``source_digest()`` at a checkout)."""
from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

PACKAGE_DIR = Path(__file__).parent.parent  # the nin package


def git_commit() -> str | None:
    """The source's commit, with "-dirty" when tracked files differ from it (the record must say so)."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=7", "--exclude", "*"],
                             capture_output=True, text=True, timeout=5, cwd=PACKAGE_DIR)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def source_digest(package_dir: Path = PACKAGE_DIR) -> str:
    """SHA-256 (first 16 hex digits) over the relative path and bytes of every .py and .toml file of the package,
    in sorted order: the same files give the same digest on any machine."""
    digest = hashlib.sha256()
    for path in sorted(p for p in package_dir.rglob("*") if p.suffix in (".py", ".toml") and p.is_file()):
        digest.update(path.relative_to(package_dir).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


if __name__ == "__main__":
    print(source_digest())
