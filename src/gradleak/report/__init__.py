"""Pictures and files a run leaves behind, each written atomically (temp file, then rename)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

# File writing lives in gradleak.io; re-exported here for code that still imports it from report.
from gradleak.io.files import atomic_write, current_umask, write_json, write_text  # noqa: F401


def to_numpy_image(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [0, 1] → (H, W, 3) or (H, W) uint8."""
    array = (image.detach().float().cpu().clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    return array[0] if array.shape[0] == 1 else np.transpose(array, (1, 2, 0))


def save_image(path: Path, image: torch.Tensor) -> None:
    """Save one (C, H, W) image at its native resolution as PNG."""
    from PIL import Image

    atomic_write(path, lambda tmp: Image.fromarray(to_numpy_image(image)).save(tmp, format="PNG"))


def _figure() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def _show(ax: Any, image: torch.Tensor) -> None:
    array = to_numpy_image(image)
    ax.imshow(array, cmap="gray" if array.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
    ax.axis("off")


def _save_figure(fig: Any, path: Path) -> None:
    plt = _figure()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))
    plt.close(fig)


def tile(images: torch.Tensor) -> torch.Tensor:
    """Put a batch (B, C, H, W) side by side into one (C, H, B·W + gaps) image."""
    if images.dim() == 3:
        return images
    gap = torch.ones(images.shape[1], images.shape[2], 1)
    parts: list[torch.Tensor] = []
    for i, image in enumerate(images):
        if i:
            parts.append(gap)
        parts.append(image.cpu())
    return torch.cat(parts, dim=2)


def save_history(path: Path, snapshots: Sequence[tuple[int, torch.Tensor]], *, columns: int = 10) -> None:
    """A grid of snapshots (batch tiled side by side), each titled with its iteration."""
    plt = _figure()
    count = max(1, len(snapshots))
    rows = math.ceil(count / columns)
    cols = min(columns, count)
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols * _batch_width(snapshots), 1.45 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (iteration, images) in zip(axes.flat, snapshots):
        _show(ax, tile(images))
        ax.set_title(f"iter={iteration}", fontsize=8)
    _save_figure(fig, path)


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
    plt = _figure()
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
    _save_figure(fig, path)


COMPARISON_COLUMNS = 16


def _save_mosaic(path: Path, targets: torch.Tensor, reconstructions: torch.Tensor) -> None:
    """Rows of 16 targets, each above the row of their reconstructions, in one image."""
    plt = _figure()
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
    _save_figure(fig, path)


def save_curves(
    path: Path,
    losses: Sequence[float],
    psnrs: Sequence[float] | None = None,
    *,
    restarts: Sequence[tuple[int, str]] = (),
) -> None:
    """Gradient-matching loss (log scale) and, when known, PSNR against iterations.

    ``restarts`` holds (iteration, reason) for each fresh start an attack made after giving up on a
    try (DLG's stall guard); each is drawn as a dashed red line on both panels, so a curve that
    jumps back up is read as a new start, not as the optimiser getting worse.
    """
    plt = _figure()
    panels = 2 if psnrs else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.0 * panels, 3.6), squeeze=False)
    iterations = np.arange(1, len(losses) + 1)
    positive = np.clip(np.asarray(losses, dtype=float), 1e-12, None)
    axes[0, 0].semilogy(iterations, positive)
    axes[0, 0].set_xlabel("iteration")
    axes[0, 0].set_ylabel("gradient-matching loss")
    axes[0, 0].grid(True, alpha=0.3)
    if psnrs:
        finite = np.nan_to_num(np.asarray(psnrs, dtype=float), posinf=100.0, neginf=-20.0)
        axes[0, 1].plot(np.arange(1, len(finite) + 1), finite, color="tab:orange")
        axes[0, 1].axhline(30, color="gray", linestyle="--", linewidth=0.8)
        axes[0, 1].set_xlabel("iteration")
        axes[0, 1].set_ylabel("PSNR (dB)")
        axes[0, 1].grid(True, alpha=0.3)
    for number, (iteration, reason) in enumerate(restarts):
        for ax in axes.flat:
            ax.axvline(iteration + 0.5, color="tab:red", linestyle=":", linewidth=1.0,
                       label=f"restart after {reason}" if number == 0 else None)
    if restarts:
        axes[0, 0].legend(fontsize=7, loc="best")
        axes[0, 0].set_title(f"{len(restarts)} restart(s)", fontsize=9)
    _save_figure(fig, path)
