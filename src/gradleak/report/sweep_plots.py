"""The plots of a sweep report: attack quality against each defense parameter, precision, batch
size and FedAvg local steps, and the privacy-utility trade-off.

Made to be read at a glance: one legend per figure (below the panels, readable size), a marker
shape and size per line (a line hidden under another still shows its markers), bounded panels
(success rate, SSIM) spread equal values apart by a stated offset, labels placed so they do not
overlap.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gradleak.figures.run_figures import figure_module, save_figure
from gradleak.report.sweep_data import PSNR_CAP, SETTING_KEYS, defense_parameter

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
FONT_SIZE = 10
SPREAD = 0.015  # vertical offset between lines on panels bounded to [0, 1] (stated in the axis label)
PARAMETER_NAMES = {"gaussian": "Gaussian noise variance", "laplacian": "Laplacian noise scale b",
                   "prune": "pruning ratio", "dpsgd": "DP-SGD noise multiplier sigma"}


def _plt() -> Any:
    plt = figure_module()
    plt.rcParams.update({"font.size": FONT_SIZE, "axes.titlesize": FONT_SIZE, "legend.fontsize": FONT_SIZE - 1})
    return plt


def line_style(i: int, count: int) -> dict[str, Any]:
    """Colour, marker (shape and size: earlier lines larger, so equal points show as rings) for line i."""
    return {"color": f"C{i % 10}", "marker": MARKERS[i % len(MARKERS)],
            "markersize": max(4.0, 9.0 - 4.0 * i / max(1, count - 1)), "markerfacecolor": "none" if i % 2 else None,
            "linewidth": 1.4}


def spread(values: Sequence[float | None], i: int, count: int) -> list[float]:
    """``values`` shifted by this line's offset (lines centred on the true value)."""
    offset = (i - (count - 1) / 2) * SPREAD if count > 1 else 0.0
    return [v + offset if v is not None else math.nan for v in values]


def figure_legend(fig: Any, axes: Any, *, columns: int = 3) -> None:
    """One legend for the whole figure, below its panels (the handles of the first panel that has any)."""
    for ax in (axes if hasattr(axes, "__iter__") else [axes]):
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="lower center", ncol=min(columns, len(handles)), frameon=False,
                       bbox_to_anchor=(0.5, 0.0))
            fig.tight_layout(rect=(0, 0.02 + 0.055 * math.ceil(len(handles) / columns), 1, 1))
            return
    fig.tight_layout()


def group_label(g: Mapping[str, Any], keys: Sequence[str], varying: Sequence[str]) -> str:
    parts = [f"{k}={g.get(k)}" if k in ("batch_size", "local_steps") else str(g.get(k)) for k in keys if k in varying]
    return " ".join(parts) or "all runs"


def varying_keys(summary: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> list[str]:
    return [k for k in keys if len({g.get(k) for g in summary}) > 1]


def _bounded_label(text: str, lines: int) -> str:
    return f"{text}\n(lines offset by {SPREAD:g} to stay visible)" if lines > 1 else text


def plot_against_defense(summary: Sequence[Mapping[str, Any]], family: str, path: Path, threshold: float) -> bool:
    """PSNR, success rate and SSIM against a defense parameter (one line per other setting)."""
    fam = [(value, g) for (kind, value), g in ((defense_parameter(g["defense"]), g) for g in summary)
           if kind == family and isinstance(value, float)]
    if not fam:
        return False
    plt = _plt()
    other = [k for k in SETTING_KEYS if k != "defense"]
    varying = varying_keys([g for _, g in fam], other)
    lines: dict[tuple, list[tuple[float, Mapping[str, Any]]]] = defaultdict(list)
    for value, g in fam:
        lines[tuple(g.get(k) for k in other)].append((value, g))
    baselines = {tuple(g.get(k) for k in other): g for g in summary if g["defense"] == "none"}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    name = PARAMETER_NAMES.get(family, family)
    count = len(lines)
    for i, (key, pts) in enumerate(sorted(lines.items(), key=lambda kv: str(kv[0]))):
        pts.sort(key=lambda p: p[0])
        xs = [p[0] for p in pts]
        style = line_style(i, count)
        label = group_label(dict(zip(other, key)), other, varying)
        axes[0].plot(xs, [p[1].get("psnr_mean") if p[1].get("psnr_mean") is not None else math.nan for p in pts],
                     label=label, **style)
        lo, hi = [p[1].get("psnr_min") for p in pts], [p[1].get("psnr_max") for p in pts]
        if all(v is not None for v in lo + hi):
            axes[0].fill_between(xs, lo, hi, color=style["color"], alpha=0.12)
        axes[1].plot(xs, spread([p[1].get("success_rate") for p in pts], i, count), **style)
        axes[2].plot(xs, spread([p[1].get("ssim_mean") for p in pts], i, count), **style)
        base = baselines.get(key)
        for ax, metric in ((axes[0], "psnr_mean"), (axes[1], "success_rate"), (axes[2], "ssim_mean")):
            if base is not None and base.get(metric) is not None:
                ax.axhline(base[metric], color=style["color"], linestyle=":", linewidth=1,
                           label="no defense (dotted)" if i == 0 and ax is axes[0] else None)
    axes[0].axhline(threshold, color="gray", linestyle="--", linewidth=0.8, label=f"{threshold:g} dB: success")
    for ax in axes:
        if family in ("gaussian", "laplacian", "dpsgd") and all(v > 0 for v, _ in fam):
            ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel(f"mean PSNR (dB, capped at {PSNR_CAP:g})\nband: min..max over images")
    axes[1].set_ylabel(_bounded_label(f"success rate (PSNR ≥ {threshold:g} dB)", count))
    axes[1].set_ylim(-0.08, 1.08)
    axes[2].set_ylabel(_bounded_label("mean SSIM", count))
    axes[2].set_ylim(-0.08, 1.08)
    fig.suptitle(f"attack quality against {name}")
    figure_legend(fig, axes)
    save_figure(fig, path)
    return True


def plot_precision(summary: Sequence[Mapping[str, Any]], path: Path, threshold: float) -> bool:
    """Mean PSNR and success rate for fp32 (no defense), fp16 and int8 updates, a bar per setting."""
    order = {"none": "fp32", "fp16": "fp16", "int8": "int8"}
    rows = [g for g in summary if g["defense"] in order]
    if not any(g["defense"] in ("fp16", "int8") for g in rows):
        return False
    plt = _plt()
    other = [k for k in SETTING_KEYS if k != "defense"]
    varying = varying_keys(rows, other)
    groups: dict[tuple, dict[str, Mapping[str, Any]]] = defaultdict(dict)
    for g in rows:
        groups[tuple(g.get(k) for k in other)][g["defense"]] = g
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    width = 0.8 / max(1, len(groups))
    for i, (key, by) in enumerate(sorted(groups.items(), key=lambda kv: str(kv[0]))):
        xs = [j + i * width for j in range(len(order))]
        label = group_label(dict(zip(other, key)), other, varying)
        psnr = [(by.get(d) or {}).get("psnr_mean") for d in order]
        rate = [(by.get(d) or {}).get("success_rate") for d in order]
        axes[0].bar(xs, [v if v is not None else 0 for v in psnr], width=width, label=label, color=f"C{i % 10}")
        axes[1].bar(xs, [v if v is not None else 0 for v in rate], width=width, color=f"C{i % 10}")
    for ax in axes:
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(order))], list(order.values()))
        ax.set_xlabel("precision of the shared update")
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].axhline(threshold, color="gray", linestyle="--", linewidth=0.8, label=f"{threshold:g} dB: success")
    axes[0].set_ylabel(f"mean PSNR (dB, capped at {PSNR_CAP:g})")
    axes[1].set_ylabel(f"success rate (PSNR ≥ {threshold:g} dB)")
    axes[1].set_ylim(0, 1.05)
    figure_legend(fig, axes)
    save_figure(fig, path)
    return True


def plot_against_axis(summary: Sequence[Mapping[str, Any]], axis: str, path: Path, threshold: float,
                      *, only: Mapping[str, Any] | None = None) -> bool:
    """PSNR and success rate against ``batch_size`` or ``local_steps`` (one line per other setting)."""
    rows = [g for g in summary if g.get(axis) is not None and all(g.get(k) == v for k, v in (only or {}).items())]
    if len({g.get(axis) for g in rows}) < 2:
        return False
    plt = _plt()
    other = [k for k in SETTING_KEYS if k != axis]
    varying = varying_keys(rows, other)
    lines: dict[tuple, list[Mapping[str, Any]]] = defaultdict(list)
    for g in rows:
        lines[tuple(g.get(k) for k in other)].append(g)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    count = len(lines)
    for i, (key, pts) in enumerate(sorted(lines.items(), key=lambda kv: str(kv[0]))):
        pts = sorted(pts, key=lambda g: g.get(axis) or 0)
        xs = [g.get(axis) for g in pts]
        style = line_style(i, count)
        label = group_label(dict(zip(other, key)), other, varying)
        axes[0].plot(xs, [g.get("psnr_mean") if g.get("psnr_mean") is not None else math.nan for g in pts],
                     label=label, **style)
        axes[1].plot(xs, spread([g.get("success_rate") for g in pts], i, count), **style)
    names = {"batch_size": "batch size", "local_steps": "FedAvg local steps"}
    for ax in axes:
        ax.set_xlabel(names.get(axis, axis))
        values = sorted({int(g[axis]) for g in rows})
        if values[0] > 0 and values[-1] / values[0] >= 16:  # batches 1..256: powers of two read better
            ax.set_xscale("log", base=2)
        ax.set_xticks(values)
        ax.set_xticklabels([str(v) for v in values])
        ax.grid(True, alpha=0.3)
    axes[0].axhline(threshold, color="gray", linestyle="--", linewidth=0.8, label=f"{threshold:g} dB: success")
    axes[0].set_ylabel(f"mean PSNR (dB, capped at {PSNR_CAP:g})")
    axes[1].set_ylabel(_bounded_label(f"success rate (PSNR ≥ {threshold:g} dB)", count))
    axes[1].set_ylim(-0.08, 1.08)
    figure_legend(fig, axes)
    save_figure(fig, path)
    return True


def plot_privacy_utility(pu: Sequence[Mapping[str, Any]], path: Path, threshold: float) -> bool:
    """Test accuracy under each defense against the strongest attack's PSNR and success rate."""
    points = [p for p in pu if p.get("accuracy") is not None and p.get("psnr_best") is not None]
    if not points:
        return False
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    families: dict[str, list[tuple[float, Mapping[str, Any]]]] = defaultdict(list)
    for p in points:
        family, value = defense_parameter(p["defense"])
        families[family].append((value if isinstance(value, float) else 0.0, p))
    labels: list[tuple[Any, float, float, str, str]] = []
    for i, (family, pts) in enumerate(sorted(families.items())):
        pts.sort(key=lambda vp: vp[0])
        joined = family not in ("none", "precision", "stacked")
        color = "black" if family == "none" else f"C{i % 10}"
        style = {**line_style(i, len(families)), "color": color, "linestyle": "-" if joined else "none"}
        for ax, key in ((axes[0], "psnr_best"), (axes[1], "success_best")):
            ys = [p.get(key) if p.get(key) is not None else math.nan for _, p in pts]
            ax.plot([p["accuracy"] for _, p in pts], ys, label=family, **style)
        for _, p in pts:
            text = p["defense"].split(":", 1)[-1] if joined else p["defense"]
            labels.append((axes[0], p["accuracy"], p["psnr_best"], text, color))
    axes[0].axhline(threshold, color="gray", linestyle="--", linewidth=0.8, label=f"{threshold:g} dB: success")
    axes[0].set_ylabel(f"strongest attack: mean PSNR (dB, capped at {PSNR_CAP:g})")
    axes[1].set_ylabel(f"strongest attack: success rate (PSNR ≥ {threshold:g} dB)")
    axes[1].set_ylim(-0.05, 1.05)
    for ax in axes:
        ax.set_xlabel("test accuracy when training under the defense")
        ax.grid(True, alpha=0.3)
    fig.suptitle("privacy-utility: lower right is better for the defender")
    figure_legend(fig, axes, columns=4)
    place_labels(fig, labels)
    save_figure(fig, path)
    return True


# Offsets (points) tried in turn for a point's label: right, above, below, left, then further out.
_OFFSETS = [(5, 3), (5, -11), (-5, 3), (-5, -11), (5, 12), (5, -20), (-5, 12), (-5, -20), (14, -4), (-14, -4),
            (5, 22), (5, -30), (-5, 22), (-5, -30)]


def place_labels(fig: Any, labels: Sequence[tuple[Any, float, float, str, str]], *, size: int = FONT_SIZE - 2) -> int:
    """Annotate each (axes, x, y, text, colour) at the first offset whose text box overlaps no label
    placed before it (nor its point's marker); returns how many had to overlap (none fitted)."""
    renderer = fig.canvas.get_renderer()
    placed: list[Any] = []
    crowded = 0
    for ax, x, y, text, color in labels:
        for number, (dx, dy) in enumerate(_OFFSETS):
            ha = "left" if dx >= 0 else "right"
            note = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=size,
                               color=color, ha=ha)
            box = note.get_window_extent(renderer).expanded(1.05, 1.1)
            if not any(box.overlaps(other) for other in placed) or number == len(_OFFSETS) - 1:
                crowded += int(number == len(_OFFSETS) - 1 and any(box.overlaps(o) for o in placed))
                placed.append(box)
                break
            note.remove()
    return crowded
