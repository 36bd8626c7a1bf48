"""Sweeps on a real Dask LocalCluster: end to end, resume, a killed worker, two sweeps at once."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from html.parser import HTMLParser

import pytest

from gradleak.sweep.grid import parse_plan
from gradleak.sweep.store import Store

from .conftest import tiny_toml

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client():
    from gradleak.sweep.engine import start_client

    client, cluster = start_client(workers=2)
    yield client
    client.close()
    cluster.close()


def _plan(text: str, name: str = "tiny"):
    return parse_plan(text, default_name=name, where=f"{name}.toml")


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.cards: dict[str, int] = {}
        self.card: str | None = None
        self.depth = 0
        self.table: str | None = None
        self.rows: dict[str, int] = {}
        self.in_body = False
        self.images = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "div":
            if a.get("data-run"):
                self.card, self.depth = a["data-run"], 0
                self.cards[self.card] = 0
            elif self.card is not None:
                self.depth += 1
        if tag == "img":
            assert a["src"].startswith("data:image/png;base64,")
            self.images += 1
            if self.card is not None:
                self.cards[self.card] += 1
        if tag == "table":
            self.table = a.get("id")
            self.rows[self.table] = 0
        if tag == "tbody":
            self.in_body = True
        if tag == "tr" and self.in_body:
            self.rows[self.table] += 1

    def handle_endtag(self, tag):
        if tag == "div" and self.card is not None:
            if self.depth == 0:
                self.card = None
            else:
                self.depth -= 1
        if tag == "tbody":
            self.in_body = False


def test_two_worker_sweep_end_to_end(tmp_path):
    from gradleak.report.sweep_report import write_sweep_report
    from gradleak.sweep.engine import run_sweep

    extra = "\n[utility]\nepochs = 1\ntrain_size = 200\ntest_size = 100\n"
    plan = _plan(tiny_toml(iterations=4, extra=extra))
    assert len(plan.attack_runs) == 4 and len(plan.utility_runs) == 2
    start = time.perf_counter()
    summary = run_sweep(plan, tmp_path / "sweep", workers=2, progress=False)
    elapsed = time.perf_counter() - start
    assert summary.workers == 2
    assert (summary.done, summary.failed, summary.lost) == (6, 0, 0), summary.failures
    assert elapsed < 60, f"tiny sweep took {elapsed:.1f} s"

    store = Store(tmp_path / "sweep" / "store.sqlite", create=False)
    rows = store.rows()
    assert {r["status"] for r in rows} == {"done"} and store.duplicates() == {}
    workers = {r["worker"].split(" pid ")[0] for r in rows}
    assert len(workers) == 2, "both workers should have run something"
    for r in rows:
        assert r["attempts"] == 1
        for artifact in r["artifacts"]:
            assert (tmp_path / "sweep" / artifact).is_file()
    attack = [r for r in rows if r["kind"] == "attack"]
    assert all({"metrics.json", "comparison.png", "recon.png", "target.png"} <= {a.rsplit("/", 1)[-1] for a in r["artifacts"]} for r in attack)
    assert all(isinstance(r["metrics"]["psnr"], float) for r in attack)
    util = [r for r in rows if r["kind"] == "utility"]
    assert all(0 <= r["metrics"]["accuracy"] <= 1 for r in util)
    assert (tmp_path / "sweep" / "sweep.toml").is_file()

    # re-running finds everything done and starts no cluster at all
    again = run_sweep(plan, tmp_path / "sweep", workers=2, progress=False)
    assert (again.submitted, again.already_done, again.workers) == (0, 6, 0)

    # the report: tables, plots and one self-contained page with every run's pictures
    files = write_sweep_report(tmp_path / "sweep")
    html = files.html.read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html and "<script src" not in html
    page = _Page()
    page.feed(html)
    assert set(page.cards) == {r["run_id"] for r in attack}
    assert all(count >= 2 for count in page.cards.values())  # target | reconstruction
    assert page.rows["runs"] == len(attack)
    assert page.rows["utility"] == len(util)
    assert (files.out_dir / "runs.csv").read_text().count("\n") == len(attack) + 1
    assert (files.out_dir / "psnr_vs_gaussian.png").is_file()
    assert (files.out_dir / "privacy_utility.md").is_file()


def test_resume_reruns_only_unfinished_runs(tmp_path, client):
    from gradleak.sweep.engine import run_sweep

    plan = _plan(tiny_toml(iterations=3))
    first = run_sweep(plan, tmp_path, client=client, progress=False)
    assert first.done == 4
    target = plan.attack_runs[2].run_id
    con = sqlite3.connect(tmp_path / "store.sqlite")
    with con:
        con.execute("UPDATE runs SET status = 'failed' WHERE run_id = ?", (target,))
    con.close()
    second = run_sweep(plan, tmp_path, client=client, progress=False)
    assert (second.submitted, second.done, second.already_done) == (1, 1, 3)
    skip = run_sweep(plan, tmp_path, client=client, progress=False, retry_failed=False)
    assert skip.submitted == 0
    store = Store(tmp_path / "store.sqlite", create=False)
    assert {r["run_id"]: r["attempts"] for r in store.rows()}[target] == 2
    assert store.duplicates() == {target: 2}  # reset by hand above, so run (and recorded) twice on purpose


def test_a_killed_worker_loses_nothing(tmp_path, client):
    """SIGKILL the worker process running a run: Dask re-runs it elsewhere; all runs done once."""
    from gradleak.sweep.engine import run_sweep

    text = tiny_toml(iterations=30).replace('indices = [0, 1]', 'indices = [0, 1, 2]')
    plan = _plan(text, "killed")
    n = len(plan.runs)
    holder: dict = {}
    thread = threading.Thread(
        target=lambda: holder.setdefault("summary", run_sweep(plan, tmp_path, client=client, progress=False))
    )
    thread.start()
    store = Store(tmp_path / "store.sqlite")
    victim, killed_at = None, 0.0
    deadline = time.time() + 90
    while victim is None and time.time() < deadline and thread.is_alive():
        # kill a worker in the middle of a run it has claimed
        for row in store.rows(status="running"):
            if row["worker"] and row["started"] and time.time() - row["started"] > 0.3:
                victim, killed_at = row, time.time()
                os.kill(int(row["worker"].rsplit(" pid ", 1)[1]), signal.SIGKILL)
                break
        time.sleep(0.05)
    assert victim is not None, "no run was seen running"
    thread.join(timeout=180)
    assert not thread.is_alive()
    summary = holder["summary"]
    rows = {r["run_id"]: r for r in store.rows()}
    events = store.events()
    diagnostics = [(round(e["time"] - killed_at, 2), e["run_id"][:6], e["event"], e["attempt"]) for e in events]
    assert summary.lost == 0 and summary.failed == 0, summary.failures
    assert summary.done == n and all(r["status"] == "done" for r in rows.values()), diagnostics
    assert store.duplicates() == {}, diagnostics  # nothing recorded twice
    finished_before_kill = any(
        e["run_id"] == victim["run_id"] and e["event"] == "done" and e["time"] <= killed_at for e in events
    )
    if not finished_before_kill:  # the usual case: the kill interrupted the victim's run
        assert rows[victim["run_id"]]["attempts"] == 2, diagnostics
        mine = [e["event"] for e in events if e["run_id"] == victim["run_id"]]
        assert mine[:2] == ["claimed", "takeover"] and mine.count("done") == 1, diagnostics
    assert not list(tmp_path.glob("runs/.*partial*"))
    client.wait_for_workers(2, timeout=60)  # the nanny restarted it


def test_two_sweeps_on_one_store(tmp_path, client):
    from gradleak.sweep.engine import run_sweep

    plan = _plan(tiny_toml(iterations=10).replace('indices = [0, 1]', 'indices = [0, 1, 2]'), "shared")
    out: list = []

    def sweep() -> None:
        out.append(run_sweep(plan, tmp_path, client=client, progress=False))

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    store = Store(tmp_path / "store.sqlite", create=False)
    assert store.counts()["done"] == len(plan.runs)
    assert store.duplicates() == {} and store.integrity() == "ok"
    assert sum(s.done for s in out) == len(plan.runs)  # each run executed by exactly one sweep
    assert all(r["attempts"] == 1 for r in store.rows())


def test_gpu_runs_are_placed_with_worker_resources():
    """The embedded cluster grants GPU=1 to one worker per GPU; GPU tasks land only there."""
    from distributed import get_worker

    from gradleak.sweep.engine import _gpu_workers, start_client

    client, cluster = start_client(workers=2, gpus=1)
    try:
        workers = client.scheduler_info()["workers"]
        granted = [a for a, w in workers.items() if w.get("resources", {}).get("GPU") == 1]
        assert len(granted) == 1 and _gpu_workers(client) == 1

        def where() -> tuple[str, str | None]:
            return get_worker().address, os.environ.get("CUDA_VISIBLE_DEVICES")

        placed = client.gather([client.submit(where, pure=False, resources={"GPU": 1}) for _ in range(4)])
        assert {p for p in placed} == {(granted[0], "0")}
    finally:
        client.close()
        cluster.close()


def test_cuda_runs_without_a_gpu_are_refused_before_starting(tmp_path):
    import torch

    from gradleak.errors import GradleakError
    from gradleak.sweep.engine import run_sweep

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    plan = _plan(tiny_toml().replace('download = false', 'download = false\ndevice = "cuda"'))
    with pytest.raises(GradleakError, match="ask for device cuda but this machine has no CUDA GPU"):
        run_sweep(plan, tmp_path, progress=False)


def test_a_full_disk_stops_the_sweep_in_one_line_and_it_resumes(tmp_path, monkeypatch, capfd):
    # A disk that fills during a sweep, simulated deterministically: after the second result is
    # recorded, every connection gets SQLite's max_page_count = its current size, so any write
    # that needs a new page fails with SQLITE_FULL ("database or disk is full"), as on a full disk.
    from gradleak.cli.main import main
    from gradleak.sweep import engine

    config = tmp_path / "tiny.toml"
    config.write_text(tiny_toml(iterations=2))
    sweep = tmp_path / "s"
    sweep.mkdir()
    # The store with 512-byte pages: each recorded result (a few kB of metrics) needs new pages.
    con = sqlite3.connect(sweep / "store.sqlite")
    con.execute("PRAGMA page_size = 512")
    con.execute("PRAGMA journal_mode = WAL")
    con.close()
    state = {"recorded": 0, "full": False}
    connect, finish = Store._connect, Store.finish

    def full_connect(self):
        con = connect(self)
        if state["full"]:
            con.execute(f"PRAGMA max_page_count = {con.execute('PRAGMA page_count').fetchone()[0]}")
        return con

    def counting_finish(self, *args, **kwargs):
        recorded = finish(self, *args, **kwargs)
        state["recorded"] += 1
        state["full"] = state["full"] or state["recorded"] == 2
        return recorded

    def in_process_client(**_):  # one worker thread in this process, so the patches apply to it
        return distributed.Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0"), None

    monkeypatch.setattr(Store, "_connect", full_connect)
    monkeypatch.setattr(Store, "finish", counting_finish)
    monkeypatch.setattr(engine, "start_client", in_process_client)
    argv = ["sweep", str(config), "--out", str(sweep), "--quiet", "--no-report"]
    assert main(argv) == 2  # rc != 0
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err  # no Dask task-error blocks, no traceback
    assert lines[0].startswith("gradleak sweep: error: sweep tiny stopped after 2 of 4 run(s)")
    assert f"sweep store {sweep / 'store.sqlite'}: the disk is full" in lines[0] and "re-run the same command" in lines[0]
    store = Store(sweep / "store.sqlite", create=False)
    assert store.integrity() == "ok" and store.counts()["done"] == 2

    state["full"] = False  # space freed: the same command resumes
    assert main(argv) == 0
    out = capfd.readouterr().out
    assert "4 runs, 2 already done, 2 submitted: 2 done, 0 failed, 0 lost" in out
    assert store.counts()["done"] == 4 and store.duplicates() == {}
