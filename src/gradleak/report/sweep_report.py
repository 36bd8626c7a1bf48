"""Reports of a sweep (tables, plots, one self-contained ``report.html``) and of a single run.

``write_sweep_report(SWEEP_DIR)`` reads ``SWEEP_DIR/store.sqlite`` and writes into
``SWEEP_DIR/report/``:

* ``runs.csv`` / ``runs.md`` -- one row per run (config axes, status, PSNR, SSIM, success, ...);
* ``summary.csv`` / ``summary.md`` -- runs grouped by setting (over images and seeds): count,
  mean / median / min / max PSNR, success rate, mean SSIM, ST-LPIPS and label accuracy;
* ``utility.csv`` / ``utility.md`` and ``privacy_utility.csv`` / ``.md`` when the sweep trained
  models under its defenses: accuracy, accuracy cost and the attack's PSNR / success per defense;
* plots (PNG): PSNR and success rate against Gaussian variance, Laplacian scale, pruning ratio,
  precision (fp32 / fp16 / int8), batch size and FedAvg local steps (each when the sweep varies
  it), and the privacy-utility curve;
* ``report.html`` -- summary, plots, a grid of target | reconstruction per run and the sortable
  run table, everything embedded (opens offline); made to be read at 1,400 px without
  scrolling sideways (checked in headless Chromium by the tests).

The parts: numbers in :mod:`~gradleak.report.sweep_data`, tables in
:mod:`~gradleak.report.sweep_tables`, plots in :mod:`~gradleak.report.sweep_plots` and
:mod:`~gradleak.report.sweep_image_grid`, the page in :mod:`~gradleak.report.sweep_page`;
``write_run_report(RUN_DIR)`` (:mod:`~gradleak.report.run_page`) writes ``RUN_DIR/report.html``
for one ``gradleak run`` output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradleak.errors import GradleakError
from gradleak.io.files import write_text
from gradleak.report.run_page import write_run_report
from gradleak.report.sweep_data import (
    DEFAULT_SUCCESS_PSNR,
    PSNR_CAP,
    SETTING_KEYS,
    attack_records,
    capped,
    defense_parameter,
    privacy_utility,
    run_success,
    summarise,
    utility_records,
)
from gradleak.report.sweep_image_grid import plot_image_grid
from gradleak.report.sweep_page import sweep_html
from gradleak.report.sweep_plots import plot_against_axis, plot_against_defense, plot_precision, plot_privacy_utility
from gradleak.report.sweep_tables import (
    PU_COLUMNS,
    RUN_COLUMNS,
    SUMMARY_COLUMNS,
    UTILITY_COLUMNS,
    csv_text,
    markdown_table,
)

__all__ = [
    "DEFAULT_SUCCESS_PSNR", "PSNR_CAP", "SETTING_KEYS", "ReportFiles", "capped", "defense_parameter", "run_success",
    "summarise", "write_report", "write_run_report", "write_sweep_report",
]


@dataclass
class ReportFiles:
    out_dir: Path
    html: Path
    tables: list[Path] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)


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

