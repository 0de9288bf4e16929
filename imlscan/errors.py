"""One exception type for every error a user can cause or fix.

The CLI prints ``ImlscanError`` as one line (plus its hint) and exits with its code; anything
else is a bug and is shown with a traceback only under ``--debug``.
"""

from __future__ import annotations


class ImlscanError(Exception):
    """An error with a message meant for the user, an optional hint, and an exit code."""

    def __init__(self, message: str, *, hint: str | None = None, exit_code: int = 1):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class UsageError(ImlscanError):
    """Bad command-line usage or an unbuilt feature: exit code 2."""

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message, hint=hint, exit_code=2)
