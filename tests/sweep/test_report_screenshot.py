"""The sweep report as a reader sees it: rendered by headless Chromium at 1,400 px.

Measured in the rendered page (not by reading the HTML): nothing scrolls sideways, the PSNR and
success columns are on screen, the plots are shown near their natural size (so their text stays
readable at 100% zoom), and the screenshot is a real page. Skipped only when ``chromium`` is not
installed (Debian: ``apt-get install -y chromium``; ``.ci/run`` installs it).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gradleak.report.sweep_report import write_sweep_report
from tests.sweep.test_report import _fake_sweep

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WIDTH = 1400
# dlg_defenses_small's defenses; two attacks whose success rates are equal at most levels
DEFENSES = ["none", "gaussian:1e-4", "gaussian:1e-3", "gaussian:1e-2", "gaussian:1e-1", "laplacian:7.07e-3",
            "laplacian:2.24e-2", "laplacian:7.07e-2", "laplacian:2.24e-1", "fp16", "int8", "prune:0.01", "prune:0.1",
            "prune:0.2", "prune:0.3", "prune:0.4", "prune:0.5", "prune:0.7", "dpsgd:clip=1,sigma=0.01",
            "dpsgd:clip=1,sigma=0.1", "dpsgd:clip=1,sigma=1"]

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium; .ci/run installs it)"
)

PROBE = """<script>
window.addEventListener('load', function () {
  var out = {scroll: document.documentElement.scrollWidth, width: window.innerWidth, headers: {}, tables: {}, images: []};
  document.querySelectorAll('table').forEach(function (t) {
    out.tables[t.id || 'table'] = Math.round(t.getBoundingClientRect().right);
    t.querySelectorAll('th').forEach(function (th) {
      out.headers[(t.id || 'table') + ':' + th.textContent] = Math.round(th.getBoundingClientRect().right);
    });
  });
  document.querySelectorAll('.plots img').forEach(function (img) {
    out.images.push([img.alt, img.clientWidth, img.naturalWidth]);
  });
  var pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    profile.mkdir()
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", f"--window-size={WIDTH},2400", "--hide-scrollbars", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)


def _psnr(attack: str, defense: str, index: int) -> float:
    strength = {"none": 0, "fp16": 0, "int8": 1}.get(defense, 1 + DEFENSES.index(defense) % 4)
    return (90.0 if attack == "auto" else 60.0) - 12.0 * strength - index


def test_sweep_report_reads_at_1400px_in_chromium(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    _fake_sweep(sweep, attacks=("idlg", "auto"), defenses=DEFENSES, psnr_of=_psnr)
    files = write_sweep_report(sweep)
    probe = files.out_dir / "probe.html"
    probe.write_text(files.html.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dumped = _chromium(tmp_path, "--dump-dom", probe.as_uri())
    found = re.search(r'<pre id="probe">(.*?)</pre>', dumped.stdout, re.S)
    assert found, f"chromium rendered no probe (exit {dumped.returncode}): {dumped.stderr[-500:]}"
    layout = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert layout["scroll"] <= layout["width"] == WIDTH, layout  # no sideways scroll of the page
    assert all(right <= WIDTH for right in layout["tables"].values()), layout["tables"]  # nor of any table
    for header in ("summary:success_rate", "summary:psnr_mean", "runs:psnr", "runs:success"):
        assert 0 < layout["headers"][header] <= WIDTH, (header, layout["headers"])
    assert "summary:dataset" not in layout["headers"]  # constant: folded into the line above the table
    for alt, shown, natural in layout["images"]:
        assert shown >= 0.75 * min(natural, 1200), (alt, shown, natural)  # text drawn at 10 pt stays >= 10 px
    shot = tmp_path / "report.png"
    taken = _chromium(tmp_path, f"--screenshot={shot}", files.html.as_uri())
    assert shot.is_file(), taken.stderr[-500:]
    with Image.open(shot) as image:
        assert image.size[0] == WIDTH
        pixels = np.asarray(image.convert("L"), dtype=float)
    assert pixels[:400].std() > 10 and not math.isclose(pixels.min(), pixels.max())  # a page, not a blank
    shutil.copy(shot, files.out_dir / "screenshot.png")  # kept beside the report for a look
