"""The files a federation audit leaves: per round and client a folder, at the top an index.

``round-RRR/client-ID/`` holds ``reconstruction.png`` (the batch side by side),
``private.png`` when the experimenter's reference data scored it, ``metrics.json`` and a
self-contained ``index.html``; the audit folder holds ``audit.json`` (every row) and
``index.html`` (one table row per round and client, failed audits with their reason).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from gradleak.io.files import write_json, write_text
from gradleak.figures import save_image, tile
from gradleak.report.html import esc, img_tag, page, table_html

_COLUMNS = ("round", "client", "status", "psnr", "ssim", "label_accuracy", "batch_size", "local_steps", "attack_seconds")


def _upscaled(images: torch.Tensor, factor: int = 4) -> torch.Tensor:
    # 32-pixel images are unreadable at their native size in a browser: nearest-neighbour ×4.
    return torch.nn.functional.interpolate(images.detach().float().cpu(), scale_factor=factor, mode="nearest")


def write_client_page(
    folder: Path, row: dict[str, Any], reconstructions: torch.Tensor, private: torch.Tensor | None
) -> None:
    """Write one client update's pictures, ``metrics.json`` and ``index.html`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=False)
    save_image(folder / "reconstruction.png", tile(_upscaled(reconstructions)))
    pictures = [f"<h2>Reconstruction</h2>{img_tag(folder / 'reconstruction.png', 'reconstruction')}"]
    if private is not None:
        save_image(folder / "private.png", tile(_upscaled(private)))
        pictures.append(f"<h2>The client's private batch</h2>{img_tag(folder / 'private.png', 'private batch')}")
    write_json(folder / "metrics.json", row)
    facts = [(key, row[key]) for key in (*_COLUMNS, "local_lr", "local_batch_size", "defenses", "stop_reason") if key in row]
    title = f"Round {row['round']}, client {row['client']}"
    body = [f"<h1>{esc(title)}</h1>", table_html(["what", "value"], [[k, v] for k, v in facts], sortable=False, text_columns=["what", "value"]), *pictures]
    write_text(folder / "index.html", page(title, body))


def write_index(out_dir: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Write ``audit.json`` and the summary ``index.html`` (one row per round and client)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "audit.json", list(rows))
    columns = [*_COLUMNS, "error"]
    table = table_html(columns, [[row.get(c, "") for c in columns] for row in rows], text_columns=["client", "status", "error"])
    thumbs = []
    for row in rows:
        if row.get("status") == "ok":
            caption = f"round {row['round']}, client {row['client']}" + (f": {row['psnr']:.1f} dB" if "psnr" in row else "")
            thumbs.append(
                f"<figure>{img_tag(out_dir / row['folder'] / 'reconstruction.png', caption)}"
                f"<figcaption>{esc(caption)}</figcaption></figure>"
            )
    body = [
        "<h1>gradleak: what each client's update leaked</h1>",
        '<p class="muted">One row per round and client; PSNR/SSIM only where the private data was available '
        "to score against (a simulation).</p>",
        table,
        "<h2>Reconstructions</h2>" + "".join(thumbs),
    ]
    write_text(out_dir / "index.html", page("gradleak federation audit", body))
