"""The numbers of a sweep report: records from the store, groups by setting, privacy-utility.

An image counts as recovered when its PSNR is at least the sweep's ``success_psnr`` (default
30 dB); a run's success is the fraction of its images recovered. An exact reconstruction has
infinite PSNR; aggregates cap PSNR at :data:`PSNR_CAP`.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

PSNR_CAP = 100.0
DEFAULT_SUCCESS_PSNR = 30.0
SETTING_KEYS = ("dataset", "model", "weights", "attack", "scenario", "defense", "batch_size", "local_steps")


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
            "st_lpips": m.get("st_lpips"),
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
            "st_lpips_mean": _mean(r.get("st_lpips") for r in done),
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
