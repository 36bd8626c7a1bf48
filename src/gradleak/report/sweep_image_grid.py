"""The picture grid of a sweep report: for one defense family, each attack's reconstruction of each
private image at every level (columns), under the private image itself, captioned with its PSNR."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gradleak.figures.run_figures import save_figure
from gradleak.report.sweep_data import _sort_key, defense_parameter
from gradleak.report.sweep_plots import FONT_SIZE, _plt

MAX_IMAGES = 4  # private images per attack (rows); more make the grid too tall to read


def plot_image_grid(records: Sequence[Mapping[str, Any]], family: str, path: Path, sweep_dir: Path) -> bool:
    """One row per (attack, image): the private image, then its reconstruction with no defense and
    at each level of ``family``; single-image runs saved with ``save_final``. Sized so that the
    captions stay readable when the page shows it at 100% (about 1,200 px wide)."""
    from PIL import Image

    def level(rec: Mapping[str, Any]) -> float | None:
        if rec.get("defense") == "none":
            return -math.inf
        kind, value = defense_parameter(str(rec.get("defense")))
        return value if kind == family and isinstance(value, float) else None

    usable = [r for r in records if r.get("status") == "done" and r.get("out_dir") and r.get("batch_size") in (1, None)
              and level(r) is not None and (sweep_dir / str(r["out_dir"]) / "recon.png").is_file()]
    if not any(level(r) != -math.inf for r in usable):
        return False
    levels = sorted({level(r) for r in usable})  # type: ignore[type-var]
    attacks = sorted({str(r.get("attack")) for r in usable})
    rows = [(attack, index) for attack in attacks
            for index in sorted({r.get("index") for r in usable if str(r.get("attack")) == attack}, key=_sort_key)[:MAX_IMAGES]]
    cells = {(str(r.get("attack")), r.get("index"), level(r)): r for r in usable}
    plt = _plt()
    columns = len(levels) + 1
    cell = min(1.35, 11.0 / columns)
    fig, axes = plt.subplots(len(rows), columns, figsize=(cell * columns + 1.4, (cell + 0.35) * len(rows) + 0.6),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for col, value in enumerate(levels, 1):
        axes[0][col].set_title("no defense" if value == -math.inf else f"{value:g}", fontsize=FONT_SIZE)
    axes[0][0].set_title("private image", fontsize=FONT_SIZE)
    for row, (attack, index) in enumerate(rows):
        first = next(r for (a, i, _), r in cells.items() if a == attack and i == index)
        target = sweep_dir / str(first["out_dir"]) / "target.png"
        if target.is_file():
            _show(axes[row][0], Image.open(target))
        axes[row][0].text(-0.08, 0.5, f"{attack}\nimage {index}", transform=axes[row][0].transAxes,
                          ha="right", va="center", fontsize=FONT_SIZE)
        for col, value in enumerate(levels, 1):
            rec = cells.get((attack, index, value))
            if rec is None:
                continue
            _show(axes[row][col], Image.open(sweep_dir / str(rec["out_dir"]) / "recon.png"))
            psnr = rec.get("psnr")
            axes[row][col].text(0.5, -0.03, "" if psnr is None else f"{min(psnr, 999):.1f} dB",
                                transform=axes[row][col].transAxes, ha="center", va="top", fontsize=FONT_SIZE - 1)
    fig.suptitle(f"reconstructions per {family} level (columns), per attack and private image (rows); PSNR below each",
                 fontsize=FONT_SIZE)
    fig.tight_layout()
    save_figure(fig, path)
    return True


def _show(ax: Any, image: Any) -> None:
    gray = image.mode in ("L", "I", "I;16")
    ax.imshow(image, cmap="gray" if gray else None, vmin=0, vmax=255, interpolation="nearest")
    ax.axis("off")
