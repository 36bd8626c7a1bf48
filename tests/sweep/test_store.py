"""The SQLite store: claims, resume, takeovers, and two processes on one store."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
import time

import pytest

from gradleak.errors import GradleakError
from gradleak.sweep.store import Store


def _store(tmp_path, n=3, **kwargs):
    store = Store(tmp_path / "store.sqlite", **kwargs)
    store.add_runs([(f"r{i}", "attack", f"run {i}", {"i": i}, {"index": i}) for i in range(n)], sweep="t")
    return store


def test_wal_mode_and_schema(tmp_path):
    store = _store(tmp_path)
    con = sqlite3.connect(store.path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.integrity() == "ok"
    assert store.counts() == {"pending": 3, "running": 0, "done": 0, "failed": 0}


def test_adding_runs_again_keeps_existing_rows(tmp_path):
    store = _store(tmp_path)
    session = store.open_session()
    claim = store.claim("r0", session, "w")
    store.finish("r0", session, claim.attempt, metrics={"psnr": 50.0}, out_dir="runs/r0", artifacts=["runs/r0/a.png"])
    added = store.add_runs([(f"r{i}", "attack", "x", {}, {}) for i in range(5)])
    assert added == 2  # r3, r4 are new; r0..r2 untouched
    row = {r["run_id"]: r for r in store.rows()}["r0"]
    assert row["status"] == "done" and row["metrics"] == {"psnr": 50.0} and row["artifacts"] == ["runs/r0/a.png"]
    assert row["config"] == {"i": 0} and row["attempts"] == 1


def test_resume_skips_done_runs(tmp_path):
    store = _store(tmp_path)
    first = store.open_session()
    for run_id in ("r0", "r1"):
        c = store.claim(run_id, first, "w")
        store.finish(run_id, first, c.attempt, metrics={})
    store.end_session(first)
    again = store.open_session()
    answers = {r: store.claim(r, again, "w").reason for r in ("r0", "r1", "r2")}
    assert answers == {"r0": "done", "r1": "done", "r2": "claimed"}
    assert store.claim("missing", again).reason == "missing"


def test_failed_runs_can_be_retried(tmp_path):
    store = _store(tmp_path, n=1)
    s = store.open_session()
    c = store.claim("r0", s, "w")
    assert store.fail("r0", s, c.attempt, "boom\nsecond line")
    row = store.rows()[0]
    assert row["status"] == "failed" and row["error"] == "boom second line"
    c2 = store.claim("r0", s, "w")
    assert c2.ok and c2.attempt == 2
    assert store.rows()[0]["error"] is None


def test_a_live_session_keeps_its_runs(tmp_path):
    store = _store(tmp_path, n=1)
    a, b = store.open_session("a"), store.open_session("b")
    assert store.claim("r0", a, "wa").ok
    assert store.claim("r0", b, "wb").reason == "busy"


def test_same_session_takes_over_after_a_worker_death(tmp_path):
    store = _store(tmp_path, n=1)
    s = store.open_session()
    first = store.claim("r0", s, "w1")
    second = store.claim("r0", s, "w2")  # Dask re-ran the task after w1 died
    assert second.ok and second.reason == "takeover" and second.attempt == first.attempt + 1
    # the dead attempt's late result is refused; the live one is recorded once
    assert not store.finish("r0", s, first.attempt, metrics={"psnr": 1.0})
    assert store.finish("r0", s, second.attempt, metrics={"psnr": 2.0})
    assert store.rows()[0]["metrics"] == {"psnr": 2.0}
    assert store.duplicates() == {}
    events = [e["event"] for e in store.events("r0")]
    assert events == ["claimed", "takeover", "rejected", "done"]


def test_dead_or_stale_sessions_lose_their_runs(tmp_path):
    store = _store(tmp_path, n=2, stale_after=0.2)
    old, new = store.open_session("old"), store.open_session("new")
    assert store.claim("r0", old, "w").ok
    assert store.claim("r1", old, "w").ok
    assert store.claim("r0", new, "w").reason == "busy"
    time.sleep(0.3)  # no heartbeat: the old session is presumed dead
    store.heartbeat(new)
    assert store.claim("r0", new, "w").reason == "takeover"
    store.end_session(old)  # an ended session's runs go back to pending
    assert store.statuses()["r1"] == "pending"


def test_session_context_keeps_a_heartbeat(tmp_path):
    store = _store(tmp_path, n=1, stale_after=0.5)
    with store.session("t", every=0.05) as s:
        assert store.claim("r0", s, "w").ok
        time.sleep(0.8)  # longer than stale_after, but the heartbeat thread keeps it alive
        other = store.open_session("other")
        assert store.claim("r0", other, "w").reason == "busy"
    # leaving the block ended the session: its running run is pending again
    assert store.statuses()["r0"] == "pending"


def test_not_a_store(tmp_path):
    bad = tmp_path / "x.sqlite"
    bad.write_text("this is not sqlite" * 100)
    with pytest.raises(GradleakError, match="not a gradleak sweep store"):
        Store(bad)
    with pytest.raises(GradleakError, match="no sweep store"):
        Store(tmp_path / "absent.sqlite", create=False)


def test_store_pickles_as_its_path(tmp_path):
    import pickle

    store = _store(tmp_path, n=1)
    copy = pickle.loads(pickle.dumps(store))
    assert copy.path == store.path and copy.counts()["pending"] == 1


# --------------------------------------------------------------------------- concurrency


def _claimer(path: str, run_ids: list[str], barrier, out) -> None:
    store = Store(path, create=False)
    session = store.open_session("proc")
    barrier.wait()
    mine = []
    for run_id in run_ids:
        claim = store.claim(run_id, session, "w")
        if claim.ok:
            mine.append(run_id)
            assert store.finish(run_id, session, claim.attempt, metrics={"by": session})
    out.put(mine)


def test_two_processes_never_claim_the_same_run(tmp_path):
    n = 150
    store = _store(tmp_path, n=n)
    ids = [f"r{i}" for i in range(n)]
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    # one walks the runs forwards, the other backwards: they collide in the middle
    procs = [ctx.Process(target=_claimer, args=(str(store.path), order, barrier, out)) for order in (ids, ids[::-1])]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    a, b = map(set, results)
    assert not a & b, "a run was claimed by both processes"
    assert a | b == set(ids)
    assert store.counts()["done"] == n
    assert store.duplicates() == {}
    assert store.integrity() == "ok"
    done_events = [e for e in store.events() if e["event"] == "done"]
    assert len(done_events) == n


def test_damaged_pages_are_one_line_naming_the_file(tmp_path):
    from .conftest import damage_page, write_store

    path = tmp_path / "store.sqlite"
    write_store(path)
    damage_page(path, "runs")
    store = Store(path, create=False)
    for read in (store.rows, store.statuses):
        with pytest.raises(GradleakError, match=rf"sweep store {path} is damaged \(database disk image is malformed\): move it aside"):
            read()
    with pytest.raises(GradleakError, match=r"is damaged .*sqlite3 .* \.recover"):
        store.check()


def test_a_damaged_index_is_found_although_rows_read(tmp_path):
    from .conftest import damage_page, write_store

    path = tmp_path / "store.sqlite"
    write_store(path)
    damage_page(path, "runs_status")
    store = Store(path, create=False)
    assert len(store.rows()) == 200  # the table itself reads: only a full check sees the damage
    with pytest.raises(GradleakError, match=rf"sweep store {path} is damaged"):
        store.check()


def test_empty_or_foreign_sqlite_file_is_not_a_store(tmp_path):
    import sqlite3

    empty = tmp_path / "store.sqlite"
    empty.write_bytes(b"")
    with pytest.raises(GradleakError, match=r"is empty \(0 bytes\)"):
        Store(empty, create=False)
    other = tmp_path / "other.sqlite"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE photos (id INTEGER)")
    con.commit()
    con.close()
    with pytest.raises(GradleakError, match="not a gradleak sweep store \\(no runs table\\)"):
        Store(other, create=False)
