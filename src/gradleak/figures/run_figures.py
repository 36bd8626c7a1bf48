"""The figures of one run: curves.png, history.png, comparison.png (matplotlib, files only)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gradleak.io.files import atomic_write
from gradleak.figures.images import tile, to_numpy_image

COMPARISON_COLUMNS = 16
HISTORY_FRAMES = 30  # at most this many snapshots in history.png (always the first and the last)


def figure_module() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def _show(ax: Any, image: torch.Tensor) -> None:
    array = to_numpy_image(image)
    ax.imshow(array, cmap="gray" if array.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
    ax.axis("off")


def save_figure(fig: Any, path: Path, *, dpi: int = 100) -> None:
    plt = figure_module()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight"))
    plt.close(fig)


def history_frames(
    snapshots: Sequence[tuple[int, torch.Tensor]], *, limit: int = HISTORY_FRAMES, same: float = 1 / 255,
) -> list[tuple[int, torch.Tensor]]:
    """The snapshots worth showing: a frame that differs from the last one kept by less than
    ``same`` (largest pixel change) is left out, the last frame is always kept, and more than
    ``limit`` frames are thinned to evenly spaced ones. A repeated iteration keeps its last frame.

    Example:
        >>> frames = [(i, torch.full((1, 2, 2), min(i, 3) / 10)) for i in range(0, 100, 1)]
        >>> [i for i, _ in history_frames(frames)]
        [0, 1, 2, 3, 99]
    """
    unique: dict[int, torch.Tensor] = {}
    for iteration, images in snapshots:
        unique[iteration] = images
    ordered = sorted(unique.items(), key=lambda item: item[0])
    if not ordered:
        return []
    kept = [ordered[0]]
    for iteration, images in ordered[1:-1]:
        if float((images.float() - kept[-1][1].float()).abs().max()) >= same:
            kept.append((iteration, images))
    if len(ordered) > 1:
        kept.append(ordered[-1])
    if len(kept) > limit:
        picks = np.unique(np.linspace(0, len(kept) - 1, limit).round().astype(int))
        kept = [kept[i] for i in picks]
    return kept


def save_history(path: Path, snapshots: Sequence[tuple[int, torch.Tensor]], *, columns: int = 10) -> None:
    """A grid of snapshots (batch tiled side by side), each titled with its iteration; the last
    one is the returned result. Near-identical frames are left out (see :func:`history_frames`)."""
    plt = figure_module()
    frames = history_frames(snapshots)
    count = max(1, len(frames))
    rows = math.ceil(count / columns)
    cols = min(columns, count)
    width = _batch_width(frames)
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols * width, 1.45 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (iteration, images) in zip(axes.flat, frames):
        _show(ax, tile(images))
        ax.set_title(f"iter={iteration}", fontsize=8)
    left_out = len({i for i, _ in snapshots}) - len(frames)
    fig.suptitle(
        f"{len(frames)} snapshots, iterations {frames[0][0]}–{frames[-1][0]} (last: the result)"
        + (f"; {left_out} near-identical or thinned out" if left_out > 0 else ""),
        fontsize=9,
    )
    save_figure(fig, path)


def _batch_width(snapshots: Sequence[tuple[int, torch.Tensor]]) -> float:
    if not snapshots or snapshots[0][1].dim() == 3:
        return 1.0
    return max(1.0, snapshots[0][1].shape[0] * 0.8)


def save_comparison(path: Path, targets: torch.Tensor, reconstructions: torch.Tensor, captions: Sequence[str]) -> None:
    """Targets (top row) above their matched reconstructions (bottom row), with captions.

    Batches of more than :data:`COMPARISON_COLUMNS` images become one mosaic of target rows over
    reconstruction rows (one picture instead of hundreds of captioned panels, which took 19 s
    and a 40,000-pixel-wide figure for a batch of 256); the PSNRs are in ``metrics.json``.
    """
    plt = figure_module()
    count = targets.shape[0]
    if count > COMPARISON_COLUMNS:
        _save_mosaic(path, targets, reconstructions)
        return
    fig, axes = plt.subplots(2, count, figsize=(2.0 * count, 4.3), squeeze=False)
    for i in range(count):
        _show(axes[0, i], targets[i])
        axes[0, i].set_title("target", fontsize=9)
        _show(axes[1, i], reconstructions[i])
        axes[1, i].set_title(captions[i], fontsize=9)
    save_figure(fig, path)


def _save_mosaic(path: Path, targets: torch.Tensor, reconstructions: torch.Tensor) -> None:
    """Rows of 16 targets, each above the row of their reconstructions, in one image."""
    plt = figure_module()
    cols = COMPARISON_COLUMNS
    count, channels, height, width = targets.shape
    blocks = []
    for start in range(0, count, cols):
        for source in (targets, reconstructions):
            chunk = source[start : start + cols].detach().float().cpu().clamp(0, 1)
            if chunk.shape[0] < cols:  # pad the last row with white
                chunk = torch.cat([chunk, torch.ones(cols - chunk.shape[0], channels, height, width)])
            row = torch.cat([torch.nn.functional.pad(img, (1, 1, 1, 1), value=1.0) for img in chunk], dim=2)
            blocks.append(row)
        blocks.append(torch.ones(channels, 4, blocks[-1].shape[2]))  # gap between pairs of rows
    mosaic = torch.cat(blocks[:-1], dim=1)
    rows = len(blocks) // 3
    fig, ax = plt.subplots(figsize=(0.5 * cols + 1, 1.05 * rows + 0.6))
    _show(ax, mosaic)
    ax.set_title(f"{count} images: each row of targets above its matched reconstructions", fontsize=9)
    save_figure(fig, path)


def _segments(objectives: Sequence[str]) -> list[tuple[int, int, str]]:
    """(start, stop, objective) of each run of points with the same objective."""
    segments: list[tuple[int, int, str]] = []
    for i, objective in enumerate(objectives):
        if segments and segments[-1][2] == objective:
            segments[-1] = (segments[-1][0], i + 1, objective)
        else:
            segments.append((i, i + 1, objective))
    return segments


def save_curves(
    path: Path,
    *,
    iterations: Sequence[int],
    losses: Sequence[float],
    psnrs: Sequence[float] | None = None,
    objectives: Sequence[str] | None = None,
    restarts: Sequence[tuple[int, str]] = (),
    success_psnr: float = 30.0,
    psnr_label: str = "PSNR",
) -> None:
    """The attack's objective (log scale when positive) and, when known, PSNR against iterations.

    ``objectives`` names what each loss is (DLG's gradient distance, MAP's posterior energy, …):
    one objective labels the y axis; an attack made of phases gets one line and legend entry per
    phase. A NaN loss is a point with a PSNR only (the returned result). ``restarts`` holds
    (iteration, reason) for each fresh start an attack made after giving up on a try (DLG's stall
    guard), drawn as a dotted red line on both panels, so a curve that jumps back up is read as a
    new start, not as the optimiser getting worse.
    """
    plt = figure_module()
    x = np.asarray(iterations, dtype=float)
    y = np.asarray(losses, dtype=float)
    names = list(objectives) if objectives is not None else ["gradient-matching loss"] * len(y)
    panels = 2 if psnrs else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 3.8), squeeze=False)
    ax = axes[0, 0]
    finite = np.isfinite(y)
    log = bool(finite.any()) and bool((y[finite] > 0).all())
    drawn = {n for i, n in enumerate(names) if finite[i]}
    for start, stop, name in _segments(names):
        keep = finite[start:stop]
        if not keep.any():
            continue
        plot = ax.semilogy if log else ax.plot
        marker = "o" if keep.sum() <= 30 else None  # a short phase (one closed-form point) stays visible
        plot(x[start:stop][keep], y[start:stop][keep], marker=marker, markersize=3, color=_colour(name, drawn),
             label=name if len(drawn) > 1 else None)
    ax.set_xlabel("iteration")
    ax.set_ylabel(next(iter(drawn)) if len(drawn) == 1 else "objective of each phase (see legend)")
    ax.grid(True, alpha=0.3)
    if psnrs:
        values = np.nan_to_num(np.asarray(psnrs, dtype=float), posinf=100.0, neginf=-20.0)
        psnr_ax = axes[0, 1]
        psnr_ax.plot(x, values, color="tab:orange", marker="o" if len(values) <= 30 else None, markersize=3,
                     label=psnr_label)
        psnr_ax.plot(x[-1:], values[-1:], "o", color="tab:orange", markersize=6, label="the returned result")
        psnr_ax.axhline(success_psnr, color="gray", linestyle="--", linewidth=0.8, label=f"{success_psnr:g} dB: success")
        psnr_ax.set_xlabel("iteration")
        psnr_ax.set_ylabel("PSNR (dB, ∞ drawn at 100)")
        psnr_ax.grid(True, alpha=0.3)
    for number, (iteration, reason) in enumerate(restarts):
        for panel in axes.flat:
            panel.axvline(iteration + 0.5, color="tab:red", linestyle=":", linewidth=1.0,
                          label=f"restart after {reason}" if number == 0 else None)
    if restarts:
        ax.set_title(f"{len(restarts) + 1} tries ({len(restarts)} restart(s))", fontsize=9)
    for panel in axes.flat:
        if panel.get_legend_handles_labels()[0]:
            panel.legend(fontsize=7, loc="best")
        panel.set_xlim(0, max(1.0, float(x.max()) if len(x) else 1.0) * 1.02)
    save_figure(fig, path)


def _colour(name: str, names: set[str]) -> str:
    palette = ["tab:blue", "tab:green", "tab:purple", "tab:brown", "tab:pink"]
    return palette[sorted(names).index(name) % len(palette)] if name in names else "tab:blue"
