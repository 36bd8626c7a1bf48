"""What a run and a sweep leave behind: files written atomically, images, figures, reports.

Split by what each file holds (file writing itself is :mod:`gradleak.io.files`, re-exported here):
:mod:`gradleak.figures` (a run's PNGs and figures, re-exported here), ``sweep_*`` (the sweep
report). Imports stay light: matplotlib is
imported only when a figure is drawn.
"""

from __future__ import annotations

from gradleak.io.files import atomic_write, current_umask, write_json, write_text
from gradleak.figures.images import save_image, tile, to_numpy_image
from gradleak.figures.run_figures import (
    COMPARISON_COLUMNS,
    history_frames,
    save_comparison,
    save_curves,
    save_history,
)

__all__ = [
    "COMPARISON_COLUMNS",
    "atomic_write",
    "current_umask",
    "history_frames",
    "save_comparison",
    "save_curves",
    "save_history",
    "save_image",
    "tile",
    "to_numpy_image",
    "write_json",
    "write_text",
]
