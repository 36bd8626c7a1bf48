"""Shared helpers for the sweep tests: tiny configs on bundled MNIST test images."""

from __future__ import annotations

import pytest
import torch

TINY_TOML = """
[sweep]
name = "tiny"
success_psnr = 30.0

[grid]
datasets = ["mnist"]
attacks = ["idlg"]
defenses = ["none", "gaussian:1e-1"]
indices = [0, 1]

[run]
split = "test"
iterations = {iterations}
download = false
data_root = "/nonexistent-gradleak-data"
"""


def tiny_toml(iterations: int = 4, extra: str = "") -> str:
    return TINY_TOML.format(iterations=iterations) + extra


@pytest.fixture
def one_thread():
    """Torch on one thread (as in a sweep worker): fast and steady on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: multi-process Dask tests (seconds to a minute)")


def write_store(path, runs: int = 200, done: int = 50):
    """A real sweep store (WAL checkpointed into the main file) with ``runs`` rows, ``done`` finished."""
    import sqlite3

    from gradleak.sweep.store import Store

    store = Store(path)
    store.add_runs([(f"r{i}", "attack", f"mnist/lenetmnist/idlg/fedsgd/none/b1/i{i}/s1234",
                     {"dataset": "mnist", "pad": "x" * 300, "i": i}, {"index": i}) for i in range(runs)], sweep="tiny")
    session = store.open_session("tiny")
    for i in range(done):
        claim = store.claim(f"r{i}", session, "w")
        store.finish(f"r{i}", session, claim.attempt, metrics={"psnr": 30.0 + i, "per_image": [], "pad": "y" * 200})
    store.end_session(session)
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return store


def damage_page(path, name: str) -> int:
    """Overwrite the root b-tree page of table/index ``name`` (past its header) with garbage, as a
    bad sector or a torn write would; returns the page number."""
    import sqlite3

    con = sqlite3.connect(path)
    root = con.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (name,)).fetchone()[0]
    size = con.execute("PRAGMA page_size").fetchone()[0]
    con.close()
    with open(path, "r+b") as f:
        f.seek((root - 1) * size + 12)
        f.write(bytes([0xA5]) * (size - 12))
    return root
