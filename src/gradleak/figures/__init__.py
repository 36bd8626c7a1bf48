"""The pictures of a single run: PNGs of images, tiles, and the run's figures (curves.png,
history.png, comparison.png). A low layer: runs, sweeps, reports and integrations all draw with
it. matplotlib is imported only when a figure is drawn.

Example:
    >>> import torch
    >>> tile(torch.zeros(2, 3, 4, 4)).shape
    torch.Size([3, 4, 9])
"""

from __future__ import annotations

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
    "history_frames",
    "save_comparison",
    "save_curves",
    "save_history",
    "save_image",
    "tile",
    "to_numpy_image",
]
