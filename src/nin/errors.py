"""The base of every error a user can cause and fix. The CLI prints such an error's message, without a
traceback, and exits with status 2. This module imports nothing of ours, so any module can raise one."""
from __future__ import annotations


class NinError(Exception):
    """An error whose message says what was wrong (the file, value or option) and what to do.

    The remedy is given in the words of the interface the user called: ``str(err)`` speaks Python
    (``root=``, ``download=True``), ``err.cli`` the command line (``--data-dir``, ``nin data download``).
    Most messages read the same in both, so ``cli`` defaults to the message.
    """

    def __init__(self, *args: object, cli: str | None = None) -> None:
        super().__init__(*args)
        self._cli = cli

    @property
    def cli(self) -> str:
        """The message as the ``nin`` command prints it."""
        return self._cli if self._cli is not None else str(self)
