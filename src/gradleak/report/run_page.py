"""``report.html`` for one run folder (``gradleak run`` or a sweep's ``runs/<id>``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from gradleak.errors import GradleakError
from gradleak.io.files import write_text
from gradleak.report.html import esc, img_tag, page, table_html


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
                        ("recon.png", "reconstruction"), ("curves.png", "objective and PSNR per iteration"),
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

