"""The example Flower app run as a user runs it: SuperLink, two SuperNodes and ``flwr run`` on
127.0.0.1, started and stopped by ``examples/flower_app/run_local.py``; the ServerApp wraps FedAvg
in GradleakAudit. Two rounds, each client one SGD step on one bundled CIFAR-10 test image.

On this loaded 2-core machine (load average ~19) the whole run took 4.6 minutes, most of it
Flower starting a fresh ClientApp process (torch import) per client and round; on an idle
machine it is about a minute.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("flwr")
pytest.importorskip("opacus")

import gradleak  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = REPO / "examples" / "flower_app" / "run_local.py"


def processes_of(flower_home: Path) -> list[int]:
    """Live processes whose environment points at this run's Flower home (i.e. started for it)."""
    marker = f"FLWR_HOME={flower_home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("flower-superlink") is None, reason="Flower's command-line tools are not on PATH")
def test_example_federation_runs_on_loopback_and_its_audit_recovers_client_images(tmp_path):
    out = tmp_path / "federation"
    env = {**os.environ, "PYTHONPATH": str(Path(gradleak.__file__).resolve().parents[1])}
    launcher = subprocess.Popen(
        [sys.executable, str(LAUNCHER), "--out", str(out), "--supernodes", "2", "--timeout", "480",
         "--run-config", "num-server-rounds=2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    try:
        output, _ = launcher.communicate(timeout=560)
    except subprocess.TimeoutExpired:
        launcher.send_signal(signal.SIGTERM)  # the launcher stops every Flower process on TERM
        output, _ = launcher.communicate(timeout=60)
    try:
        assert launcher.returncode == 0, f"the federation did not finish normally:\n{output}"
        finished = json.loads((out / "audit" / "federation.json").read_text())
        assert finished["rounds"] == 2 and finished["has_final_model"]
        rows = finished["audited"]
        assert sorted({r["round"] for r in rows}) == [1, 2] and len({r["client"] for r in rows}) == 2
        assert all(r["status"] == "ok" for r in rows), rows
        psnrs = [r["psnr"] for r in rows]
        assert max(psnrs) > 30, psnrs  # at least one round and client leaks its image
        assert sum(p > 30 for p in psnrs) >= 3, psnrs  # and in fact nearly all do
        for row in rows:
            assert (out / "audit" / row["folder"] / "reconstruction.png").is_file()
        assert (out / "audit" / "index.html").is_file()
    finally:
        assert processes_of(out / "flwr-home") == [], "Flower processes outlived the run"
