"""The one exception a command raises to stop with a message. Strictly private."""

from __future__ import annotations

__all__ = ["CommandError"]


class CommandError(Exception):
    """Stop the command: ``llmlb CMD: error: MESSAGE`` on stderr, exit ``status``.

    The message is for a person: one line, naming the file or setting at fault
    and what to do about it.
    """

    def __init__(self, message: str, *, status: int = 2) -> None:
        super().__init__(message)
        self.status = status
