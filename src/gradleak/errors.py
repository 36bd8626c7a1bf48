"""The one error type users see: a one-line message that names the problem and the fix."""

from __future__ import annotations


class GradleakError(Exception):
    """A user-facing error. The CLI prints ``str(error)`` on one line and exits non-zero.

    Example:
        >>> str(GradleakError("--iters must be at least 1 (got 0): pass --iters 300"))
        '--iters must be at least 1 (got 0): pass --iters 300'
    """

    exit_code: int = 2

    def __init__(self, message: str) -> None:
        # One line, always: a newline in a message would break the CLI's contract.
        super().__init__(" ".join(str(message).split()))
