"""Keep glibc from returning big buffers to the OS after every step.

With glibc's defaults, every training step frees its large activation buffers back to the kernel and
faults them in again on the next step; on the project's 2-core CPU that cost 1.4-1.9× in training
speed. These thresholds (the largest glibc accepts) keep the buffers in the process. The setting is
read only at process start, so the CLI re-executes itself once with it; set ``NIN_KEEP_MALLOC=1`` to
opt out.
"""
from __future__ import annotations

import os
import platform
import sys
from collections.abc import Sequence

TUNABLES = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=68719476736"


def reexec_with_tuned_malloc(argv: Sequence[str]) -> None:
    """Replace this process with the same command under the tuned allocator (Linux/glibc only)."""
    if (os.environ.get("NIN_KEEP_MALLOC") or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "")
            or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc"):
        return
    current = os.environ.get("GLIBC_TUNABLES")
    env = {**os.environ, "GLIBC_TUNABLES": f"{current}:{TUNABLES}" if current else TUNABLES}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "nin.cli", *argv], env)
