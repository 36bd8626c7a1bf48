"""What every command shares: argparse with one-line errors, and the guard that turns a
GradleakError or Ctrl-C into one line instead of a traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn

from gradleak.errors import GradleakError


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports bad flags on one line instead of usage + error."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)


def guarded(func: Callable[[], int], prog: str) -> int:
    """Run ``func``; print GradleakError and interrupts as one line instead of a traceback."""
    try:
        return func()
    except GradleakError as error:
        sys.stderr.write(f"{prog}: error: {error}\n")
        return error.exit_code
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted; nothing was written for the unfinished run\n")
        return 130
