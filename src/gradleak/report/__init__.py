"""What a run and a sweep leave behind: files written atomically, images, figures, reports.

Split by what each file holds (file writing itself is :mod:`gradleak.io.files`, re-exported here):
:mod:`gradleak.figures` (a run's PNGs and figures, re-exported here), ``sweep_*`` (the sweep
report). Imports stay light: matplotlib is
imported only when a figure is drawn.
"""

from __future__ import annotations

from gradleak import figures
from gradleak.figures import *  # noqa: F403 - the run's figures, under their old import path
from gradleak.io.files import atomic_write, current_umask, write_json, write_text

__all__ = [*figures.__all__, "atomic_write", "current_umask", "write_json", "write_text"]
