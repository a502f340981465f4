"""The base of every error a user can cause and fix. The CLI prints such an error's message, without a
traceback, and exits with status 2. This module imports nothing of ours, so any module can raise one."""
from __future__ import annotations


class NinError(Exception):
    """An error whose message says what was wrong (the file, value or option) and what to do."""
