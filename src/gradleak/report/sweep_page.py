"""The page of a sweep report: a summary, the tables (settings every run shares folded into one
line above each), the plots, a card per run and the sortable run table, all in one HTML file."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from gradleak.report.html import esc, fmt, img_tag, page, table_html
from gradleak.report.sweep_data import _mean
from gradleak.report.sweep_tables import (
    PU_COLUMNS,
    RUN_PAGE_COLUMNS,
    SUMMARY_PAGE_COLUMNS,
    TEXT_COLUMNS,
    UTILITY_PAGE_COLUMNS,
    constant_line,
    fold_constant,
)


def folded_table(columns: Sequence[str], rows: Sequence[Mapping[str, Any]], *, table_id: str, digits: int = 2,
                 what: str = "every row") -> str:
    """The varying columns as a sortable table, under one line with what every row shares."""
    shown, constant = fold_constant(columns, rows)
    line = f'<p class="shared">{esc(what)}: {esc(constant_line(constant))}</p>' if constant else ""
    return line + table_html(shown, [[r.get(c) for c in shown] for r in rows], text_columns=TEXT_COLUMNS,
                             table_id=table_id, digits=digits)


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
        '<div class="scroll">' + folded_table(SUMMARY_PAGE_COLUMNS, summary, table_id="summary",
                                             what="every setting") + "</div>",
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
                 '<div class="scroll">' + folded_table(RUN_PAGE_COLUMNS, attack, table_id="runs", what="every run")
                 + "</div>"]
    if utility:
        sections += ["<h2>Utility runs</h2>",
                     '<div class="scroll">' + folded_table(UTILITY_PAGE_COLUMNS, utility, table_id="utility", digits=3,
                                                          what="every training run") + "</div>"]
    return page(f"gradleak sweep {name}", sections)

