"""Reports of a sweep (tables, plots, one self-contained ``report.html``) and of a single run.

``write_sweep_report(SWEEP_DIR)`` reads ``SWEEP_DIR/store.sqlite`` and writes into
``SWEEP_DIR/report/``:

* ``runs.csv`` / ``runs.md`` -- one row per run (config axes, status, PSNR, SSIM, success, ...);
* ``summary.csv`` / ``summary.md`` -- runs grouped by setting (over images and seeds): count,
  mean / median / min / max PSNR, success rate, mean SSIM and label accuracy;
* ``utility.csv`` / ``utility.md`` and ``privacy_utility.csv`` / ``.md`` when the sweep trained
  models under its defenses: accuracy, accuracy cost and the attack's PSNR / success per defense;
* plots (PNG): PSNR and success rate against Gaussian variance, Laplacian scale, pruning ratio,
  precision (fp32 / fp16 / int8), batch size and FedAvg local steps (each when the sweep varies
  it), and the privacy-utility curve;
* ``report.html`` -- summary, plots, a grid of target | reconstruction per run and the sortable
  run table, everything embedded (opens offline).

An image counts as recovered when its PSNR is at least ``success_psnr`` (the sweep's
``[sweep] success_psnr``, default 30 dB); a run's success is the fraction of its images
recovered. An exact reconstruction has infinite PSNR; aggregates cap PSNR at 100 dB.

``write_run_report(RUN_DIR)`` writes ``RUN_DIR/report.html`` for one ``gradleak run`` output.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from gradleak.errors import GradleakError
from gradleak.report import atomic_write, write_text
from gradleak.report.html import esc, fmt, img_tag, page, table_html

PSNR_CAP = 100.0
DEFAULT_SUCCESS_PSNR = 30.0
SETTING_KEYS = ("dataset", "model", "weights", "attack", "scenario", "defense", "batch_size", "local_steps")
RUN_COLUMNS = (
    "label", "status", "dataset", "model", "weights", "attack", "scenario", "defense", "batch_size", "local_steps",
    "index", "seed", "psnr", "ssim", "mse", "success", "label_accuracy", "iterations", "seconds", "run_id", "error",
)
TEXT_COLUMNS = ("label", "status", "dataset", "model", "attack", "scenario", "defense", "run_id", "error", "setting")


@dataclass
class ReportFiles:
    out_dir: Path
    html: Path
    tables: list[Path] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)


# --------------------------------------------------------------------------- data


def capped(value: float | None) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return min(float(value), PSNR_CAP)


def run_success(metrics: Mapping[str, Any] | None, threshold: float) -> float | None:
    """Fraction of a run's images whose PSNR reaches ``threshold``."""
    if not metrics:
        return None
    per_image = metrics.get("per_image") or []
    values: list[float] = [
        float(p["psnr"]) for p in per_image if isinstance(p, Mapping) and p.get("psnr") is not None
    ]
    if not values and metrics.get("psnr") is not None:
        values = [float(metrics["psnr"])]
    if not values:
        return None
    return sum(1 for v in values if float(v) >= threshold) / len(values)


def defense_parameter(defense: str) -> tuple[str, Any]:
    """A defense label's family and value: ``gaussian:0.001`` → ``("gaussian", 0.001)``.

    ``none`` → ``("none", None)``; ``fp16`` / ``int8`` → ``("precision", name)``; DP-SGD →
    ``("dpsgd", sigma)``; stacked defenses → ``("stacked", label)``.
    """
    if defense in ("", "none"):
        return "none", None
    if "+" in defense:
        return "stacked", defense
    kind, _, arg = defense.partition(":")
    if kind in ("gaussian", "laplacian", "prune"):
        try:
            return kind, float(arg)
        except ValueError:
            return kind, arg
    if kind in ("fp16", "int8"):
        return "precision", kind
    if kind == "dpsgd":
        values = dict(part.split("=", 1) for part in arg.split(",") if "=" in part)
        try:
            return "dpsgd", float(values.get("sigma", "nan"))
        except ValueError:
            return "dpsgd", arg
    return kind, arg or None


def attack_records(rows: Sequence[Mapping[str, Any]], threshold: float) -> list[dict[str, Any]]:
    """Flat records (one per attack run) from store rows."""
    out = []
    for row in rows:
        axes = row.get("axes") or {}
        m = row.get("metrics") or {}
        rec = {
            "label": row.get("label"),
            "status": row.get("status"),
            **{k: axes.get(k) for k in ("dataset", "model", "attack", "scenario", "defense", "batch_size", "local_steps", "index", "seed")},
            "weights": axes.get("weights", "init"),  # sweeps before grid.weights: the model at initialisation
            "psnr": m.get("psnr"),
            "ssim": m.get("ssim"),
            "mse": m.get("mse"),
            "success": run_success(m, threshold) if row.get("status") == "done" else None,
            "label_accuracy": m.get("label_accuracy"),
            "iterations": m.get("iterations"),
            "seconds": m.get("seconds"),
            "run_id": row.get("run_id"),
            "error": row.get("error") or "",
            "out_dir": row.get("out_dir"),
            "artifacts": row.get("artifacts") or [],
        }
        out.append(rec)
    return out


def utility_records(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        axes = row.get("axes") or {}
        m = row.get("metrics") or {}
        out.append({
            "label": row.get("label"),
            "status": row.get("status"),
            "dataset": axes.get("dataset"),
            "model": m.get("model") or axes.get("model"),
            "defense": axes.get("defense"),
            "seed": axes.get("seed"),
            "accuracy": m.get("accuracy"),
            "epochs": len(m.get("epoch_accuracy") or []) or None,
            "train_size": m.get("train_size"),
            "test_size": m.get("test_size"),
            "seconds": m.get("seconds"),
            "run_id": row.get("run_id"),
            "error": row.get("error") or "",
        })
    return out


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return statistics.fmean(vals) if vals else None


def summarise(records: Sequence[Mapping[str, Any]], keys: Sequence[str] = SETTING_KEYS) -> list[dict[str, Any]]:
    """Group attack records by ``keys`` (over images and seeds)."""
    groups: dict[tuple, list[Mapping[str, Any]]] = defaultdict(list)
    for rec in records:
        groups[tuple(rec.get(k) for k in keys)].append(rec)
    out = []
    for key, recs in groups.items():
        done = [r for r in recs if r.get("status") == "done"]
        psnrs = [p for p in (capped(r.get("psnr")) for r in done) if p is not None]
        out.append({
            **dict(zip(keys, key)),
            "runs": len(recs),
            "done": len(done),
            "failed": sum(1 for r in recs if r.get("status") == "failed"),
            "psnr_mean": statistics.fmean(psnrs) if psnrs else None,
            "psnr_median": statistics.median(psnrs) if psnrs else None,
            "psnr_min": min(psnrs) if psnrs else None,
            "psnr_max": max(psnrs) if psnrs else None,
            "success_rate": _mean(r.get("success") for r in done),
            "ssim_mean": _mean(r.get("ssim") for r in done),
            "label_accuracy": _mean(r.get("label_accuracy") for r in done),
        })
    return sorted(out, key=lambda g: tuple(_sort_key(g.get(k)) for k in keys))


def _sort_key(value: Any) -> tuple:
    if value is None:
        return (2, "")
    if isinstance(value, (int, float)):
        return (0, float(value), "")
    if isinstance(value, str) and value.partition(":")[0] in ("secagg", "imprint") and "=" in value:
        # A scenario with parameters (``imprint:bins=256``): by name, then numerically.
        name, _, params = value.partition(":")
        numbers = []
        for part in params.split(","):
            try:
                numbers.append(float(part.partition("=")[2]))
            except ValueError:
                numbers.append(math.inf)
        return (1, 100, 0.0, name, tuple(numbers))
    if isinstance(value, str):
        family, param = defense_parameter(value)
        order = ["none", "gaussian", "laplacian", "prune", "precision", "dpsgd", "stacked"]
        rank = order.index(family) if family in order else len(order)
        return (1, rank, param if isinstance(param, float) else 0.0, value)
    return (1, 0, 0.0, str(value))


def privacy_utility(summary: Sequence[Mapping[str, Any]], utility: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per defense: accuracy (mean over seeds), its cost against ``none``, and the attack's PSNR and
    success: ``*_best`` for the strongest setting (attack, model, ...) against that defense,
    ``psnr_mean`` / ``success_rate`` averaged over settings."""
    acc: dict[str, list[float]] = defaultdict(list)
    for u in utility:
        if u.get("status") == "done" and u.get("accuracy") is not None:
            acc[u["defense"]].append(float(u["accuracy"]))
    if not acc:
        return []
    baseline = statistics.fmean(acc["none"]) if acc.get("none") else None
    attack: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for g in summary:
        attack[g["defense"]].append(g)
    out = []
    for defense in sorted(acc, key=_sort_key):
        a = statistics.fmean(acc[defense])
        groups = attack.get(defense, [])
        psnrs = [g["psnr_mean"] for g in groups if g.get("psnr_mean") is not None]
        rates = [g["success_rate"] for g in groups if g.get("success_rate") is not None]
        out.append({
            "defense": defense,
            "accuracy": a,
            "accuracy_cost": None if baseline is None else baseline - a,
            "psnr_best": max(psnrs) if psnrs else None,
            "success_best": max(rates) if rates else None,
            "psnr_mean": _mean(psnrs),
            "success_rate": _mean(rates),
            "attack_runs": sum(int(g.get("done") or 0) for g in groups),
        })
    return out


# --------------------------------------------------------------------------- tables


def csv_text(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_value(row.get(c)) for c in columns])
    return buffer.getvalue()


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def markdown_table(columns: Sequence[str], rows: Sequence[Mapping[str, Any]], digits: int = 2) -> str:
    def cell(v: Any) -> str:
        return fmt(v, digits).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


SUMMARY_COLUMNS = (*SETTING_KEYS, "runs", "done", "failed", "psnr_mean", "psnr_median", "psnr_min", "psnr_max",
                   "success_rate", "ssim_mean", "label_accuracy")
UTILITY_COLUMNS = ("label", "status", "dataset", "model", "defense", "seed", "accuracy", "epochs", "train_size",
                   "test_size", "seconds", "run_id", "error")
PU_COLUMNS = ("defense", "accuracy", "accuracy_cost", "psnr_best", "success_best", "psnr_mean", "success_rate",
              "attack_runs")


# --------------------------------------------------------------------------- plots


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    plt = _plt()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))
    plt.close(fig)


def _group_label(g: Mapping[str, Any], keys: Sequence[str], varying: Sequence[str]) -> str:
    parts = [f"{k}={g.get(k)}" if k in ("batch_size", "local_steps") else str(g.get(k)) for k in keys if k in varying]
    return " ".join(parts) or "all runs"


def _varying(summary: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> list[str]:
    return [k for k in keys if len({g.get(k) for g in summary}) > 1]


def plot_against_defense(summary: Sequence[Mapping[str, Any]], family: str, path: Path, threshold: float) -> bool:
    """PSNR and success rate against a defense parameter (one line per other setting)."""
    points = [(defense_parameter(g["defense"]), g) for g in summary]
    fam = [(p[1], g) for p, g in points if p[0] == family and isinstance(p[1], float)]
    if len(fam) < 1:
        return False
    plt = _plt()
    other = [k for k in SETTING_KEYS if k != "defense"]
    varying = _varying([g for _, g in fam], other)
    lines: dict[tuple, list[tuple[float, Mapping[str, Any]]]] = defaultdict(list)
    baselines: dict[tuple, Mapping[str, Any]] = {}
    for value, g in fam:
        lines[tuple(g.get(k) for k in other)].append((value, g))
    for g in summary:
        if g["defense"] == "none":
            baselines[tuple(g.get(k) for k in other)] = g
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    names = {"gaussian": "Gaussian noise variance", "laplacian": "Laplacian noise scale b", "prune": "pruning ratio",
             "dpsgd": "DP-SGD noise multiplier sigma"}
    for i, (key, pts) in enumerate(sorted(lines.items(), key=lambda kv: str(kv[0]))):
        pts.sort(key=lambda p: p[0])
        xs = [p[0] for p in pts]
        label = _group_label(dict(zip(other, key)), other, varying)
        color = f"C{i % 10}"
        mean = [p[1].get("psnr_mean") for p in pts]
        axes[0].plot(xs, [m if m is not None else math.nan for m in mean], "o-", color=color, label=label)
        lo = [p[1].get("psnr_min") for p in pts]
        hi = [p[1].get("psnr_max") for p in pts]
        if all(v is not None for v in lo + hi):
            axes[0].fill_between(xs, lo, hi, color=color, alpha=0.15)
        rate = [p[1].get("success_rate") for p in pts]
        axes[1].plot(xs, [r if r is not None else math.nan for r in rate], "o-", color=color, label=label)
        similarity = [p[1].get("ssim_mean") for p in pts]
        axes[2].plot(xs, [v if v is not None else math.nan for v in similarity], "o-", color=color, label=label)
        base = baselines.get(key)
        if base is not None and base.get("psnr_mean") is not None:
            axes[0].axhline(base["psnr_mean"], color=color, linestyle=":", linewidth=1)
            if base.get("success_rate") is not None:
                axes[1].axhline(base["success_rate"], color=color, linestyle=":", linewidth=1)
            if base.get("ssim_mean") is not None:
                axes[2].axhline(base["ssim_mean"], color=color, linestyle=":", linewidth=1)
    axes[0].axhline(threshold, color="gray", linestyle="--", linewidth=0.8)
    for ax in axes:
        if family in ("gaussian", "laplacian", "dpsgd") and all(v > 0 for v, _ in fam):
            ax.set_xscale("log")
        ax.set_xlabel(names.get(family, family))
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel(f"PSNR (dB, capped at {PSNR_CAP:g}; band = min..max)")
    axes[1].set_ylabel(f"success rate (PSNR >= {threshold:g} dB)")
    axes[1].set_ylim(-0.05, 1.05)
    axes[2].set_ylabel("mean SSIM")
    axes[2].set_ylim(-0.05, 1.05)
    axes[0].set_title(f"attack quality vs {names.get(family, family)} (dotted: no defense)", fontsize=9)
    if len(lines) > 1 or varying:
        axes[1].legend(fontsize=7, loc="best")
    _save(fig, path)
    return True


def _caption(ax: Any, text: str) -> None:
    """A caption directly under an image (titles of stacked image axes read as the next row's)."""
    ax.text(0.5, -0.04, text, transform=ax.transAxes, ha="center", va="top", fontsize=6)


def plot_image_grid(records: Sequence[Mapping[str, Any]], family: str, path: Path, sweep_dir: Path) -> bool:
    """Targets, then one row of reconstructions per level of ``family`` (and no defense), for the
    attack with the highest mean PSNR; single-image runs saved with ``save_final``."""
    from PIL import Image

    def level(rec: Mapping[str, Any]) -> float | None:
        kind, value = defense_parameter(str(rec.get("defense")))
        if rec.get("defense") == "none":
            return -math.inf
        return value if kind == family and isinstance(value, float) else None

    usable = [r for r in records if r.get("status") == "done" and r.get("out_dir") and r.get("batch_size") in (1, None)
              and level(r) is not None and (sweep_dir / str(r["out_dir"]) / "recon.png").is_file()]
    if not any(level(r) != -math.inf for r in usable):
        return False
    by_attack: dict[Any, list[Mapping[str, Any]]] = defaultdict(list)
    for r in usable:
        by_attack[r.get("attack")].append(r)
    attack = max(by_attack, key=lambda a: statistics.fmean(capped(r.get("psnr")) or 0.0 for r in by_attack[a]))
    chosen = by_attack[attack]
    levels = sorted({level(r) for r in chosen})  # type: ignore[type-var]
    indices = sorted({r.get("index") for r in chosen}, key=_sort_key)[:8]
    cells = {(level(r), r.get("index")): r for r in chosen}
    plt = _plt()
    fig, axes = plt.subplots(len(levels) + 1, len(indices), figsize=(1.5 * len(indices) + 1.2, 1.5 * (len(levels) + 1)),
                             squeeze=False)
    for col, index in enumerate(indices):
        target = next((sweep_dir / str(r["out_dir"]) / "target.png" for r in chosen if r.get("index") == index), None)
        for row in range(len(levels) + 1):
            axes[row][col].axis("off")
        if target is not None and target.is_file():
            axes[0][col].imshow(Image.open(target), cmap="gray", vmin=0, vmax=255)
            _caption(axes[0][col], f"image {index} (private)")
        for row, value in enumerate(levels, 1):
            rec = cells.get((value, index))
            if rec is None:
                continue
            axes[row][col].imshow(Image.open(sweep_dir / str(rec["out_dir"]) / "recon.png"), cmap="gray", vmin=0, vmax=255)
            name = "none" if value == -math.inf else f"{value:g}"
            psnr_value = rec.get("psnr")
            _caption(axes[row][col], f"{name}: {psnr_value:.1f} dB" if psnr_value is not None else name)
    fig.suptitle(f"{attack}: reconstructions per {family} level (top: the private images)", fontsize=8)
    _save(fig, path)
    return True


def plot_precision(summary: Sequence[Mapping[str, Any]], path: Path, threshold: float) -> bool:
    order = {"none": "fp32", "fp16": "fp16", "int8": "int8"}
    rows = [g for g in summary if g["defense"] in order]
    if not any(g["defense"] in ("fp16", "int8") for g in rows):
        return False
    plt = _plt()
    other = [k for k in SETTING_KEYS if k != "defense"]
    varying = _varying(rows, other)
    groups: dict[tuple, dict[str, Mapping[str, Any]]] = defaultdict(dict)
    for g in rows:
        groups[tuple(g.get(k) for k in other)][g["defense"]] = g
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    width = 0.8 / max(1, len(groups))
    for i, (key, by) in enumerate(sorted(groups.items(), key=lambda kv: str(kv[0]))):
        xs = [j + i * width for j in range(len(order))]
        label = _group_label(dict(zip(other, key)), other, varying)
        psnr = [(by.get(d) or {}).get("psnr_mean") for d in order]
        rate = [(by.get(d) or {}).get("success_rate") for d in order]
        axes[0].bar(xs, [v if v is not None else 0 for v in psnr], width=width, label=label, color=f"C{i % 10}")
        axes[1].bar(xs, [v if v is not None else 0 for v in rate], width=width, label=label, color=f"C{i % 10}")
    for ax in axes:
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(order))], list(order.values()))
        ax.set_xlabel("precision of the shared update")
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].axhline(threshold, color="gray", linestyle="--", linewidth=0.8)
    axes[0].set_ylabel(f"mean PSNR (dB, capped at {PSNR_CAP:g})")
    axes[1].set_ylabel(f"success rate (PSNR >= {threshold:g} dB)")
    axes[1].set_ylim(0, 1.05)
    if len(groups) > 1:
        axes[1].legend(fontsize=7)
    _save(fig, path)
    return True


def plot_against_axis(summary: Sequence[Mapping[str, Any]], axis: str, path: Path, threshold: float,
                      *, only: Mapping[str, Any] | None = None) -> bool:
    """PSNR and success rate against ``batch_size`` or ``local_steps`` (one line per other setting)."""
    rows = [g for g in summary if g.get(axis) is not None and all(g.get(k) == v for k, v in (only or {}).items())]
    if len({g.get(axis) for g in rows}) < 2:
        return False
    plt = _plt()
    other = [k for k in SETTING_KEYS if k != axis]
    varying = _varying(rows, other)
    lines: dict[tuple, list[Mapping[str, Any]]] = defaultdict(list)
    for g in rows:
        lines[tuple(g.get(k) for k in other)].append(g)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for i, (key, pts) in enumerate(sorted(lines.items(), key=lambda kv: str(kv[0]))):
        pts = sorted(pts, key=lambda g: g.get(axis) or 0)
        xs = [g.get(axis) for g in pts]
        label = _group_label(dict(zip(other, key)), other, varying)
        color = f"C{i % 10}"
        axes[0].plot(xs, [g.get("psnr_mean") if g.get("psnr_mean") is not None else math.nan for g in pts], "o-",
                     color=color, label=label)
        axes[1].plot(xs, [g.get("success_rate") if g.get("success_rate") is not None else math.nan for g in pts],
                     "o-", color=color, label=label)
    names = {"batch_size": "batch size", "local_steps": "FedAvg local steps"}
    for ax in axes:
        ax.set_xlabel(names.get(axis, axis))
        values = sorted({int(g[axis]) for g in rows})
        if values[0] > 0 and values[-1] / values[0] >= 16:  # batches 1..256: powers of two read better
            ax.set_xscale("log", base=2)
        ax.set_xticks(values)
        ax.set_xticklabels([str(v) for v in values])
        ax.grid(True, alpha=0.3)
    axes[0].axhline(threshold, color="gray", linestyle="--", linewidth=0.8)
    axes[0].set_ylabel(f"mean PSNR (dB, capped at {PSNR_CAP:g})")
    axes[1].set_ylabel(f"success rate (PSNR >= {threshold:g} dB)")
    axes[1].set_ylim(-0.05, 1.05)
    if len(lines) > 1:
        axes[1].legend(fontsize=7)
    _save(fig, path)
    return True


def plot_privacy_utility(pu: Sequence[Mapping[str, Any]], path: Path, threshold: float) -> bool:
    """Test accuracy under each defense against the strongest attack's PSNR and success rate."""
    points = [p for p in pu if p.get("accuracy") is not None and p.get("psnr_best") is not None]
    if not points:
        return False
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    families: dict[str, list[tuple[float, Mapping[str, Any]]]] = defaultdict(list)
    for p in points:
        family, value = defense_parameter(p["defense"])
        families[family].append((value if isinstance(value, float) else 0.0, p))
    for i, (family, pts) in enumerate(sorted(families.items())):
        pts.sort(key=lambda vp: vp[0])
        style = "o" if family in ("none", "precision", "stacked") else "o-"
        color = "black" if family == "none" else f"C{i % 10}"
        for ax, key in ((axes[0], "psnr_best"), (axes[1], "success_best")):
            xs = [p["accuracy"] for _, p in pts]
            ys = [p.get(key) if p.get(key) is not None else math.nan for _, p in pts]
            ax.plot(xs, ys, style, color=color, label=family)
        for x, y, (_, p) in zip([p["accuracy"] for _, p in pts], [p.get("psnr_best") for _, p in pts], pts):
            text = p["defense"].split(":", 1)[-1] if family not in ("none", "precision", "stacked") else p["defense"]
            axes[0].annotate(text, (x, y), fontsize=6, color=color, xytext=(3, 2), textcoords="offset points")
    axes[0].axhline(threshold, color="gray", linestyle="--", linewidth=0.8)
    axes[0].set_ylabel(f"strongest attack: mean PSNR (dB, capped at {PSNR_CAP:g})")
    axes[1].set_ylabel(f"strongest attack: success rate (PSNR >= {threshold:g} dB)")
    axes[1].set_ylim(-0.05, 1.05)
    for ax in axes:
        ax.set_xlabel("test accuracy when training under the defense")
        ax.grid(True, alpha=0.3)
    axes[0].set_title("privacy-utility: lower right is better for the defender", fontsize=9)
    axes[1].legend(fontsize=7)
    _save(fig, path)
    return True


# --------------------------------------------------------------------------- the report


def _load_threshold(sweep_dir: Path) -> tuple[float, str, str]:
    """(success_psnr, name, description) from SWEEP_DIR/sweep.toml when present."""
    from gradleak.sweep.grid import parse_plan

    source = sweep_dir / "sweep.toml"
    if source.is_file():
        try:
            plan = parse_plan(source.read_text(encoding="utf-8"), default_name=sweep_dir.name, where=str(source),
                              max_runs=None)  # it ran already (perhaps with --max-runs)
            return plan.success_psnr, plan.name, plan.description
        except GradleakError:
            pass
    return DEFAULT_SUCCESS_PSNR, sweep_dir.name, ""


def write_sweep_report(sweep_dir: str | Path, *, out_dir: str | Path | None = None,
                       success_psnr: float | None = None) -> ReportFiles:
    """Tables, plots and ``report.html`` for the sweep in ``sweep_dir`` (see module docs)."""
    from gradleak.sweep.engine import store_path
    from gradleak.sweep.store import Store

    sweep_dir = Path(sweep_dir)
    path = store_path(sweep_dir)
    if not path.is_file():
        raise GradleakError(f"{sweep_dir} holds no sweep store ({path.name}): give a folder written by gradleak sweep")
    threshold, name, description = _load_threshold(sweep_dir)
    if success_psnr is not None:
        threshold = success_psnr
    store = Store(path, create=False)
    store.check()  # a damaged store is refused, not reported as if whole
    rows = store.rows()
    attack = attack_records([r for r in rows if r["kind"] == "attack"], threshold)
    utility = utility_records([r for r in rows if r["kind"] == "utility"])
    summary = summarise(attack)
    pu = privacy_utility(summary, utility)

    out = Path(out_dir) if out_dir is not None else sweep_dir / "report"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise GradleakError(f"cannot create report folder {out}: {error}") from None
    files = ReportFiles(out_dir=out, html=out / "report.html")

    def table(stem: str, columns: Sequence[str], records: Sequence[Mapping[str, Any]]) -> None:
        write_text(out / f"{stem}.csv", csv_text(columns, records))
        write_text(out / f"{stem}.md", markdown_table(columns, records))
        files.tables += [out / f"{stem}.csv", out / f"{stem}.md"]

    table("runs", RUN_COLUMNS, attack)
    table("summary", SUMMARY_COLUMNS, summary)
    if utility:
        table("utility", UTILITY_COLUMNS, utility)
    if pu:
        table("privacy_utility", PU_COLUMNS, pu)

    plots: list[tuple[str, Path]] = []
    for family, title in (("gaussian", "PSNR and SSIM against Gaussian noise variance"),
                          ("laplacian", "PSNR and SSIM against Laplacian noise scale"),
                          ("prune", "PSNR and SSIM against pruning ratio"),
                          ("dpsgd", "PSNR and SSIM against the DP-SGD noise multiplier")):
        p = out / f"psnr_vs_{family}.png"
        if plot_against_defense(summary, family, p, threshold):
            plots.append((title, p))
        p = out / f"images_vs_{family}.png"
        if plot_image_grid(attack, family, p, sweep_dir):
            plots.append((f"Reconstructions per {family} level", p))
    p = out / "psnr_vs_precision.png"
    if plot_precision(summary, p, threshold):
        plots.append(("PSNR against precision", p))
    p = out / "psnr_vs_batch_size.png"
    if plot_against_axis(summary, "batch_size", p, threshold):
        plots.append(("PSNR against batch size", p))
    p = out / "psnr_vs_local_steps.png"
    if plot_against_axis(summary, "local_steps", p, threshold, only={"scenario": "fedavg"}):
        plots.append(("PSNR against FedAvg local steps", p))
    p = out / "privacy_utility.png"
    if plot_privacy_utility(pu, p, threshold):
        plots.append(("Privacy-utility", p))
    files.plots = [p for _, p in plots]

    html = sweep_html(name, description, threshold, sweep_dir, attack, summary, utility, pu, plots, store)
    write_text(files.html, html)
    return files


def _run_images(sweep_dir: Path, rec: Mapping[str, Any]) -> str:
    out_dir = rec.get("out_dir")
    if not out_dir:
        return '<div class="muted">no pictures</div>'
    run_dir = sweep_dir / out_dir
    target, recon = run_dir / "target.png", run_dir / "recon.png"
    if target.is_file() and recon.is_file():
        return f'<div class="pair">{img_tag(target, "target", title="target")}{img_tag(recon, "reconstruction", title="reconstruction")}</div>'
    comparison = run_dir / "comparison.png"
    if comparison.is_file():
        return f'<div class="pair">{img_tag(comparison, "target | reconstruction", css_class="wide")}</div>'
    return '<div class="muted">no pictures</div>'


def sweep_html(name: str, description: str, threshold: float, sweep_dir: Path, attack: Sequence[Mapping[str, Any]],
               summary: Sequence[Mapping[str, Any]], utility: Sequence[Mapping[str, Any]],
               pu: Sequence[Mapping[str, Any]], plots: Sequence[tuple[str, Path]], store: Any) -> str:
    counts: dict[str, int] = defaultdict(int)
    for rec in attack:
        counts[rec["status"]] += 1
    done = [r for r in attack if r["status"] == "done"]
    recovered = _mean(r.get("success") for r in done)
    dups = store.duplicates()
    sections = [
        f"<h1>gradleak sweep: {esc(name)}</h1>",
        f'<p class="muted">{esc(description)}</p>' if description else "",
        f'<p class="muted">folder {esc(sweep_dir)} &middot; written {esc(datetime.now().isoformat(timespec="seconds"))}</p>',
        "<h2>Summary</h2>",
        (
            "<ul>"
            f"<li>{len(attack)} attack runs: {counts.get('done', 0)} done, "
            f"<span class=\"{'fail' if counts.get('failed') else 'ok'}\">{counts.get('failed', 0)} failed</span>, "
            f"{counts.get('pending', 0) + counts.get('running', 0)} not finished</li>"
            f"<li>images recovered (PSNR &ge; {fmt(threshold, 1)} dB): {fmt(None if recovered is None else 100 * recovered, 1)}%"
            f" of finished runs</li>"
            f"<li>{len(utility)} utility (training) runs</li>"
            f"<li>runs recorded done more than once: {len(dups)}</li>"
            "</ul>"
        ),
        "<h3>By setting (over images and seeds)</h3>",
        '<div class="scroll">' + table_html(SUMMARY_COLUMNS, [[g.get(c) for c in SUMMARY_COLUMNS] for g in summary],
                                           text_columns=TEXT_COLUMNS, table_id="summary") + "</div>",
    ]
    if pu:
        sections += ["<h2>Privacy and utility</h2>",
                     table_html(PU_COLUMNS, [[p.get(c) for c in PU_COLUMNS] for p in pu], text_columns=("defense",),
                                table_id="privacy-utility", digits=3)]
    if plots:
        sections.append("<h2>Plots</h2><div class=\"plots\">")
        for title, p in plots:
            sections.append(f"<h3>{esc(title)}</h3>{img_tag(p, title)}")
        sections.append("</div>")
    cards = []
    for rec in attack:
        caption = (f"{esc(rec['label'])}<br>{esc(rec['status'])}"
                   + (f" &middot; {esc(fmt(rec.get('psnr')))} dB" if rec.get("psnr") is not None else "")
                   + (f'<br><span class="fail">{esc(rec["error"][:160])}</span>' if rec.get("error") else ""))
        cards.append(f'<div class="card" data-run="{esc(rec["run_id"])}">{_run_images(sweep_dir, rec)}'
                     f'<div class="cap">{caption}</div></div>')
    sections += ["<h2>Target | reconstruction per run</h2>", f'<div class="grid">{"".join(cards)}</div>']
    sections += ["<h2>All runs</h2>", '<p class="muted">click a column header to sort</p>',
                 '<div class="scroll">' + table_html(RUN_COLUMNS, [[r.get(c) for c in RUN_COLUMNS] for r in attack],
                                                    text_columns=TEXT_COLUMNS, table_id="runs") + "</div>"]
    if utility:
        sections += ["<h2>Utility runs</h2>",
                     table_html(UTILITY_COLUMNS, [[u.get(c) for c in UTILITY_COLUMNS] for u in utility],
                                text_columns=TEXT_COLUMNS, table_id="utility", digits=3)]
    return page(f"gradleak sweep {name}", sections)


# --------------------------------------------------------------------------- single run


def write_run_report(run_dir: str | Path, *, out: str | Path | None = None) -> Path:
    """``report.html`` for one run folder (``gradleak run`` or a sweep's ``runs/<id>``)."""
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.json"
    utility_path = run_dir / "utility.json"
    if not metrics_path.is_file() and not utility_path.is_file():
        raise GradleakError(
            f"{run_dir} is neither a sweep folder (store.sqlite) nor a run folder (metrics.json): "
            "give a folder written by gradleak sweep or gradleak run"
        )
    try:
        if metrics_path.is_file():
            metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        else:
            metrics = json.loads(utility_path.read_text(encoding="utf-8"))
        config_path = run_dir / "config.json"
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else metrics.get("config", {})
    except (OSError, ValueError) as error:
        raise GradleakError(f"cannot read the run in {run_dir}: {error}") from None
    scalars = [[k, v] for k, v in metrics.items() if isinstance(v, (int, float, str, bool)) or v is None]
    settings = [[k, json.dumps(v) if isinstance(v, (list, dict)) else v] for k, v in config.items()]
    sections = [f"<h1>gradleak run: {esc(run_dir.name)}</h1>", f'<p class="muted">folder {esc(run_dir)}</p>']
    pictures = []
    for name, title in (("comparison.png", "target (top) and reconstruction (bottom)"), ("target.png", "target"),
                        ("recon.png", "reconstruction"), ("curves.png", "loss and PSNR per iteration"),
                        ("history.png", "reconstruction history")):
        tag = img_tag(run_dir / name, title)
        if tag:
            pictures.append(f"<h3>{esc(title)}</h3>{tag}")
    if pictures:
        sections += ["<h2>Pictures</h2>", '<div class="plots">', *pictures, "</div>"]
    sections += ["<h2>Metrics</h2>", table_html(["metric", "value"], scalars, text_columns=("metric", "value"), digits=4)]
    per_image = metrics.get("per_image") or []
    if per_image and isinstance(per_image[0], Mapping):
        columns = list(per_image[0].keys())
        sections += ["<h3>Per image</h3>", table_html(columns, [[p.get(c) for c in columns] for p in per_image], digits=4)]
    sections += ["<h2>Settings</h2>", table_html(["setting", "value"], settings, text_columns=("setting", "value"), sortable=False)]
    target = Path(out) if out is not None else run_dir / "report.html"
    write_text(target, page(f"gradleak run {run_dir.name}", sections))
    return target


def write_report(path: str | Path, *, out: str | Path | None = None, success_psnr: float | None = None) -> Path:
    """A sweep folder → its report folder's ``report.html``; a run folder → its ``report.html``."""
    path = Path(path)
    if not path.exists():
        raise GradleakError(f"{path} does not exist: give a sweep folder or a run folder")
    if not path.is_dir():
        raise GradleakError(f"{path} is not a folder: give a sweep folder (with store.sqlite) or a run folder")
    if (path / "store.sqlite").is_file():
        return write_sweep_report(path, out_dir=out, success_psnr=success_psnr).html
    return write_run_report(path, out=out)
