"""A sweep on a full disk ends with one line, never waits forever (issue 21).

The store object travels to each Dask worker pickled. Its unpickling re-opened the SQLite file;
on a full tmpfs that raised inside Dask's message handling, the worker's stream broke and the
sweep waited forever (650 s, five Dask tracebacks). Unpickling now touches no file; the task's
first store call meets the error and the sweep stops with the store's one-line message.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from gradleak.errors import GradleakError
from gradleak.sweep.engine import execute_planned
from gradleak.sweep.store import Store

from .conftest import tiny_toml

REPO = Path(__file__).resolve().parents[2]


def test_unpickling_a_store_touches_no_file(tmp_path: Path) -> None:
    store = Store(tmp_path / "store.sqlite")
    blob = pickle.dumps(store)
    (tmp_path / "store.sqlite").unlink()
    (tmp_path / "store.sqlite").write_bytes(b"not sqlite at all, and long enough to be read as a header")
    copy = pickle.loads(blob)  # what a Dask worker does before the task starts: must not raise
    assert copy.path == store.path and copy.stale_after == store.stale_after
    with pytest.raises(GradleakError, match="is not a gradleak sweep store"):
        copy.claim("r0", "session", "w")


def test_a_task_whose_store_cannot_be_opened_reports_it(tmp_path: Path) -> None:
    store = Store(tmp_path / "store.sqlite")
    copy = pickle.loads(pickle.dumps(store))
    (tmp_path / "store.sqlite").unlink()
    (tmp_path / "store.sqlite").mkdir()  # not openable as a file at all
    result = execute_planned(copy, str(tmp_path), {"run_id": "r0", "kind": "attack", "config": {}}, "s")
    assert result["status"] == "store_error" and str(tmp_path / "store.sqlite") in result["error"]


def _can_mount_tmpfs(where: Path) -> bool:
    if sys.platform != "linux" or os.geteuid() != 0:
        return False
    probe = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)], capture_output=True)
    if probe.returncode != 0:
        return False
    subprocess.run(["umount", str(where)], check=True)
    return True


@pytest.mark.slow
def test_a_sweep_on_a_real_full_tmpfs_stops_in_one_line(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    mount = tmp_path / "mnt"
    mount.mkdir()
    if not _can_mount_tmpfs(mount):
        pytest.skip("needs root and mount (a real 200 kB tmpfs)")
    config = tmp_path / "cfg.toml"
    config.write_text(tiny_toml(iterations=2))  # four runs: the disk fills after the first
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mount)], check=True)
    try:
        env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
        done = subprocess.run(
            [sys.executable, "-m", "gradleak.cli.main", "sweep", str(config), "--out", str(mount / "sw"),
             "--workers", "1", "--quiet", "--no-report"],
            capture_output=True, text=True, timeout=400, env=env,
        )  # before the fix: still waiting after 650 s
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert done.returncode == 2, done.stderr[-2000:]
        assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
        assert "sweep store" in lines[0] and "re-run the same command" in lines[0]
        # The store stays whole (checked on a copy: reading it in place needs space for its -shm file).
        kept = tmp_path / "kept"
        kept.mkdir()
        for part in (mount / "sw").glob("store.sqlite*"):
            if not part.name.endswith("-shm"):
                (kept / part.name).write_bytes(part.read_bytes())
        assert Store(kept / "store.sqlite", create=False).integrity() == "ok"
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
