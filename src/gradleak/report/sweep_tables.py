"""The tables of a sweep report: CSV and Markdown files (every column), and the columns the
HTML page shows (settings that never change folded into one line above the table)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

from gradleak.report.html import fmt
from gradleak.report.sweep_data import SETTING_KEYS

RUN_COLUMNS = (
    "label", "status", "dataset", "model", "weights", "attack", "scenario", "defense", "batch_size", "local_steps",
    "index", "seed", "psnr", "ssim", "mse", "success", "label_accuracy", "iterations", "seconds", "run_id", "error",
    "st_lpips",
)
TEXT_COLUMNS = ("label", "status", "dataset", "model", "weights", "attack", "scenario", "defense", "run_id", "error",
                "setting")
SUMMARY_COLUMNS = (*SETTING_KEYS, "runs", "done", "failed", "psnr_mean", "psnr_median", "psnr_min", "psnr_max",
                   "success_rate", "ssim_mean", "label_accuracy", "st_lpips_mean")
UTILITY_COLUMNS = ("label", "status", "dataset", "model", "defense", "seed", "accuracy", "epochs", "train_size",
                   "test_size", "seconds", "run_id", "error")
PU_COLUMNS = ("defense", "accuracy", "accuracy_cost", "psnr_best", "success_best", "psnr_mean", "success_rate",
              "attack_runs")
# The page's order (the run label repeats the settings beside it: only in the CSV): what identifies a row, then success and PSNR first, then the rest.
SUMMARY_PAGE_COLUMNS = (*SETTING_KEYS, "success_rate", "psnr_mean", "psnr_median", "psnr_min", "psnr_max",
                        "ssim_mean", "st_lpips_mean", "label_accuracy", "runs", "done", "failed")
RUN_PAGE_COLUMNS = ("status", *SETTING_KEYS, "index", "seed", "success", "psnr", "ssim", "st_lpips", "mse",
                    "label_accuracy", "iterations", "seconds", "error")
UTILITY_PAGE_COLUMNS = ("defense", "accuracy", "status", "dataset", "model", "seed", "epochs", "train_size",
                        "test_size", "seconds", "error")
ALWAYS_SHOWN = ("label", "defense", "success_rate", "psnr_mean", "success", "psnr", "accuracy")


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


def fold_constant(columns: Sequence[str], rows: Sequence[Mapping[str, Any]],
                  *, keep: Sequence[str] = ALWAYS_SHOWN) -> tuple[list[str], dict[str, Any]]:
    """Split ``columns`` into those that vary over ``rows`` (shown) and those with one value in
    every row (returned as {column: value} for a line above the table). Columns in ``keep`` are
    always shown; a column that is empty everywhere is dropped from both.

    Example:
        >>> rows = [{"dataset": "mnist", "defense": "none", "psnr": 40.0, "error": ""},
        ...         {"dataset": "mnist", "defense": "fp16", "psnr": 39.0, "error": ""}]
        >>> fold_constant(["dataset", "defense", "psnr", "error"], rows)
        (['defense', 'psnr'], {'dataset': 'mnist'})
    """
    shown, constant = [], {}
    for column in columns:
        values = {_hashable(r.get(column)) for r in rows}
        empty = values <= {None, ""}
        if column in keep and not (empty and rows):
            shown.append(column)
        elif len(values) > 1:
            shown.append(column)
        elif not empty:
            constant[column] = rows[0].get(column) if rows else None
    return shown, constant


def _hashable(value: Any) -> Any:
    return repr(value) if isinstance(value, (list, dict)) else value


def constant_line(constant: Mapping[str, Any]) -> str:
    """``dataset=mnist · model=lenet · …`` for the settings every row shares."""
    return " \u00b7 ".join(f"{k}={fmt(v)}" for k, v in constant.items())
