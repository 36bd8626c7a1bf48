"""The sweep store: one SQLite file, one row per run, safe against crashes and concurrent sweeps.

* WAL journal, ``synchronous=FULL`` and a 60 s busy timeout: a killed process never leaves a
  half-written row, readers never block the writer, and concurrent writers wait their turn.
* Every state change is one ``BEGIN IMMEDIATE`` transaction that reads and writes the row, so two
  processes can never both claim a run: the second sees it ``running`` (or ``done``).
* A run is ``pending`` → ``running`` → ``done`` | ``failed``. A ``running`` row belongs to a sweep
  *session* (one ``gradleak sweep`` process), which keeps a heartbeat in ``sessions``. Another
  session may take the run over only when that session is dead (its process is gone on this host,
  or it missed heartbeats for ``stale_after`` seconds); the same session may take it over at once
  (Dask re-runs a task whose worker died). ``attempts`` counts claims; a result is accepted only
  from the latest attempt, so a late finisher can never write a second result.
* ``events`` is an append-only log (claim, takeover, done, failed, rejected) used to audit runs:
  :meth:`Store.duplicates` lists runs recorded done more than once (there should be none).

Example:
    >>> import tempfile, os
    >>> from gradleak.sweep.store import Store
    >>> store = Store(os.path.join(tempfile.mkdtemp(), "store.sqlite"))
    >>> _ = store.add_run("r1", kind="attack", label="demo", config={}, axes={})
    >>> session = store.open_session("demo")
    >>> claim = store.claim("r1", session, "w1")
    >>> claim.ok, store.claim("r1", store.open_session("other"), "w2").reason
    (True, 'busy')
    >>> store.finish("r1", session, claim.attempt, metrics={"psnr": 40.0})
    True
    >>> store.counts()["done"]
    1
"""

from __future__ import annotations

import json
import math
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradleak.errors import GradleakError

SCHEMA_VERSION = 1
STATUSES = ("pending", "running", "done", "failed")
HEARTBEAT_SECONDS = 5.0
STALE_AFTER_SECONDS = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id    TEXT PRIMARY KEY,
    kind      TEXT NOT NULL DEFAULT 'attack',
    label     TEXT NOT NULL,
    sweep     TEXT,
    status    TEXT NOT NULL DEFAULT 'pending'
              CHECK (status IN ('pending', 'running', 'done', 'failed')),
    config    TEXT NOT NULL,
    axes      TEXT NOT NULL,
    metrics   TEXT,
    out_dir   TEXT,
    artifacts TEXT,
    error     TEXT,
    attempts  INTEGER NOT NULL DEFAULT 0,
    session   TEXT,
    worker    TEXT,
    created   REAL NOT NULL,
    started   REAL,
    finished  REAL,
    seconds   REAL
);
CREATE INDEX IF NOT EXISTS runs_status ON runs (status);
CREATE TABLE IF NOT EXISTS sessions (
    session   TEXT PRIMARY KEY,
    sweep     TEXT,
    host      TEXT,
    pid       INTEGER,
    started   REAL NOT NULL,
    heartbeat REAL NOT NULL,
    ended     REAL
);
CREATE TABLE IF NOT EXISTS events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id  TEXT NOT NULL,
    event   TEXT NOT NULL,
    session TEXT,
    worker  TEXT,
    attempt INTEGER,
    time    REAL NOT NULL,
    detail  TEXT
);
CREATE INDEX IF NOT EXISTS events_run ON events (run_id);
"""


@dataclass(frozen=True)
class Claim:
    """The answer to :meth:`Store.claim`: ``ok`` with the attempt number, or why not."""

    ok: bool
    reason: str  # claimed | takeover | done | busy | missing
    attempt: int = 0


class StoreError(GradleakError):
    """The store itself cannot be read or written (a damaged file, a full disk): the sweep stops.

    Unlike a failed run this is not recorded in the store (it cannot be); the message names the
    file and the fix. Runs recorded before it are kept, so the same command resumes.
    """


def store_error(path: Path, error: sqlite3.Error) -> StoreError | None:
    """The one-line error for a damaged, unreadable or full store; None for other SQLite errors
    (e.g. "database is locked", which callers retry)."""
    code = str(getattr(error, "sqlite_errorname", "") or "")
    text = " ".join(str(error).split())
    if code.startswith("SQLITE_CORRUPT") or "malformed" in text:
        return StoreError(
            f"sweep store {path} is damaged ({text}): move it aside and re-run gradleak sweep (finished runs "
            f"are run again), or salvage its rows first with: sqlite3 {path} .recover | sqlite3 {path}.recovered"
        )
    if code == "SQLITE_NOTADB" or "not a database" in text:
        return StoreError(
            f"{path} is not a gradleak sweep store (SQLite: {text}); if it was one it is damaged: "
            "move it aside, or choose another sweep folder (--out)"
        )
    if code == "SQLITE_FULL" or "disk is full" in text:
        return StoreError(
            f"sweep store {path}: the disk is full ({text}): free space on {path.parent} and re-run the same "
            "command; the runs recorded so far are kept and skipped"
        )
    if code.startswith("SQLITE_IOERR") or "disk I/O error" in text:
        return StoreError(
            f"sweep store {path}: the disk failed to read or write it ({text}): check the disk (free space, "
            "permissions, a network filesystem that went away) and re-run the same command"
        )
    return None


def _dumps(value: Any) -> str:
    # inf PSNR (an exact reconstruction) is kept; json reads "Infinity" back.
    return json.dumps(value, sort_keys=False, default=str)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


class Store:
    """A sweep's SQLite store. Holds only the path: picklable, safe to pass to Dask tasks.

    Each method opens its own short-lived connection, so one ``Store`` may be used from several
    threads and processes at once.
    """

    def __init__(self, path: str | Path, *, stale_after: float = STALE_AFTER_SECONDS, create: bool = True) -> None:
        self.path = Path(path)
        self.stale_after = stale_after
        if create:
            self._create()
        else:
            self._check_exists()

    def __reduce__(self) -> tuple[Any, ...]:
        # Unpickled (on a Dask worker) without re-running the schema transaction.
        return (_reopen, (str(self.path), self.stale_after))

    def _check_exists(self) -> None:
        """An existing, non-empty SQLite file with a ``runs`` table, or a one-line error."""
        if not self.path.exists():
            raise GradleakError(f"no sweep store at {self.path}: run gradleak sweep first")
        if self.path.is_file() and self.path.stat().st_size == 0:
            raise StoreError(
                f"sweep store {self.path} is empty (0 bytes): no run was recorded in it; "
                "run gradleak sweep to start it afresh (or remove the file)"
            )
        with self._connection() as con:
            row = con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'runs'").fetchone()
        if row is None:
            raise StoreError(f"{self.path} is not a gradleak sweep store (no runs table): choose another sweep folder")

    def check(self) -> None:
        """Refuse a store with damaged pages (``PRAGMA quick_check``, a read of every page).

        A damaged page may sit where a given query does not look (an index, the event log), so a
        report or a sweep must not assume the store is whole because its rows could be read.
        """
        with self._connection() as con:
            problems = [str(r[0]) for r in con.execute("PRAGMA quick_check(3)").fetchall()]
        if problems != ["ok"]:
            first = " ".join(problems[0].replace("*** in database main ***", "").split())
            raise StoreError(
                f"sweep store {self.path} is damaged ({first}): move it aside and re-run gradleak sweep (finished "
                f"runs are run again), or salvage its rows first with: sqlite3 {self.path} .recover | "
                f"sqlite3 {self.path}.recovered"
            )

    # ------------------------------------------------------------------ plumbing

    def _connect(self) -> sqlite3.Connection:
        try:
            con = sqlite3.connect(str(self.path), timeout=60.0, isolation_level=None)
        except sqlite3.Error as error:
            raise GradleakError(f"cannot open sweep store {self.path}: {error}") from None
        con.row_factory = sqlite3.Row
        try:
            con.execute("PRAGMA busy_timeout = 60000")
            con.execute("PRAGMA synchronous = FULL")
        except sqlite3.DatabaseError as error:
            con.close()
            raise store_error(self.path, error) or GradleakError(
                f"{self.path} is not a gradleak sweep store (SQLite): {error}"
            ) from None
        return con

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        con = self._connect()
        try:
            yield con
        except sqlite3.DatabaseError as error:  # damaged or full: one line naming the file and the fix
            translated = store_error(self.path, error)
            if translated is None:
                raise
            raise translated from None
        finally:
            con.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``): all or nothing, one writer at a time."""
        with self._connection() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                try:
                    con.execute("ROLLBACK")
                except sqlite3.Error:  # SQLite already rolled back (e.g. after SQLITE_FULL)
                    pass
                raise
            con.execute("COMMIT")

    def _create(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise GradleakError(f"cannot create the folder for sweep store {self.path}: {error}") from None
        # While another process sets up, recovers (after a killed worker) or checkpoints the WAL,
        # SQLite can answer "database is locked" at once, without waiting for the busy timeout
        # (seen once here in the killed-worker test, under load): retry the set-up briefly.
        # WAL is only switched on when not on yet, so a normal open asks for no mode change.
        deadline = time.monotonic() + 60.0
        delay = 0.05
        while True:
            try:
                with self._connection() as con:
                    mode = con.execute("PRAGMA journal_mode").fetchone()[0]
                    if str(mode).lower() != "wal":
                        mode = con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                    if str(mode).lower() != "wal":  # pragma: no cover - filesystems without shared memory
                        raise GradleakError(f"sweep store {self.path}: SQLite cannot use WAL mode here (got {mode})")
                with self.transaction() as con:
                    for statement in filter(str.strip, _SCHEMA.split(";")):
                        con.execute(statement)
                break
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise GradleakError(f"cannot open sweep store {self.path}: {error}") from None
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
            except sqlite3.DatabaseError as error:
                raise GradleakError(f"{self.path} is not a gradleak sweep store (SQLite): {error}") from None
        with self.transaction() as con:
            row = con.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None:
                con.execute("INSERT INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) != SCHEMA_VERSION:
                raise GradleakError(
                    f"sweep store {self.path} has schema {row[0]} but this gradleak writes {SCHEMA_VERSION}: "
                    "use another sweep folder"
                )

    @staticmethod
    def _event(con: sqlite3.Connection, run_id: str, event: str, *, session: str | None = None,
               worker: str | None = None, attempt: int | None = None, detail: str | None = None) -> None:
        con.execute(
            "INSERT INTO events (run_id, event, session, worker, attempt, time, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (run_id, event, session, worker, attempt, time.time(), detail),
        )

    # ------------------------------------------------------------------ runs

    def add_run(self, run_id: str, *, kind: str, label: str, config: Mapping[str, Any],
                axes: Mapping[str, Any], sweep: str | None = None) -> bool:
        """Insert a pending run unless its id is already there; True when it was new."""
        return self.add_runs([(run_id, kind, label, config, axes)], sweep=sweep) == 1

    def add_runs(self, runs: Iterable[Any], *, sweep: str | None = None) -> int:
        """Insert runs (PlannedRun or (id, kind, label, config, axes) tuples); existing ids are kept."""
        now = time.time()
        rows = []
        for run in runs:
            if isinstance(run, tuple):
                run_id, kind, label, config, axes = run
            else:
                run_id, kind, label, config, axes = run.run_id, run.kind, run.label, run.config, run.axes
            rows.append((run_id, kind, label, sweep, _dumps(config), _dumps(axes), now))
        with self.transaction() as con:
            before = con.total_changes
            con.executemany(
                "INSERT OR IGNORE INTO runs (run_id, kind, label, sweep, config, axes, created) VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            return con.total_changes - before

    def statuses(self, run_ids: Sequence[str] | None = None) -> dict[str, str]:
        with self._connection() as con:
            rows = con.execute("SELECT run_id, status FROM runs").fetchall()
        wanted = None if run_ids is None else set(run_ids)
        return {r["run_id"]: r["status"] for r in rows if wanted is None or r["run_id"] in wanted}

    def counts(self) -> dict[str, int]:
        with self._connection() as con:
            rows = con.execute("SELECT status, COUNT(*) AS n FROM runs GROUP BY status").fetchall()
        out = {s: 0 for s in STATUSES}
        out.update({r["status"]: r["n"] for r in rows})
        return out

    def rows(self, *, kind: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        """Every run as a dict with ``config``, ``axes``, ``metrics`` and ``artifacts`` parsed."""
        query, args = "SELECT * FROM runs", []
        clauses = []
        if kind is not None:
            clauses.append("kind = ?")
            args.append(kind)
        if status is not None:
            clauses.append("status = ?")
            args.append(status)
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        query += " ORDER BY created, label"
        with self._connection() as con:
            rows = con.execute(query, args).fetchall()
        out = []
        for row in rows:
            item = dict(row)
            for key in ("config", "axes", "metrics", "artifacts"):
                item[key] = _loads(item[key])
            out.append(item)
        return out

    def events(self, run_id: str | None = None) -> list[dict[str, Any]]:
        with self._connection() as con:
            if run_id is None:
                rows = con.execute("SELECT * FROM events ORDER BY id").fetchall()
            else:
                rows = con.execute("SELECT * FROM events WHERE run_id = ? ORDER BY id", (run_id,)).fetchall()
        return [dict(r) for r in rows]

    def duplicates(self) -> dict[str, int]:
        """Runs recorded ``done`` more than once (run id → count); empty when all is well."""
        with self._connection() as con:
            rows = con.execute(
                "SELECT run_id, COUNT(*) AS n FROM events WHERE event = 'done' GROUP BY run_id HAVING n > 1"
            ).fetchall()
        return {r["run_id"]: r["n"] for r in rows}

    def integrity(self) -> str:
        with self._connection() as con:
            return str(con.execute("PRAGMA integrity_check").fetchone()[0])

    # ------------------------------------------------------------------ sessions

    def open_session(self, sweep: str | None = None) -> str:
        session = uuid.uuid4().hex
        now = time.time()
        with self.transaction() as con:
            con.execute(
                "INSERT INTO sessions (session, sweep, host, pid, started, heartbeat) VALUES (?, ?, ?, ?, ?, ?)",
                (session, sweep, socket.gethostname(), os.getpid(), now, now),
            )
        return session

    def heartbeat(self, session: str) -> None:
        with self.transaction() as con:
            con.execute("UPDATE sessions SET heartbeat = ? WHERE session = ?", (time.time(), session))

    def end_session(self, session: str) -> None:
        """Close a session; runs it still holds as ``running`` go back to ``pending``."""
        now = time.time()
        with self.transaction() as con:
            con.execute("UPDATE sessions SET ended = ?, heartbeat = ? WHERE session = ?", (now, now, session))
            held = [r[0] for r in con.execute(
                "SELECT run_id FROM runs WHERE status = 'running' AND session = ?", (session,)
            ).fetchall()]
            for run_id in held:
                con.execute("UPDATE runs SET status = 'pending' WHERE run_id = ?", (run_id,))
                self._event(con, run_id, "released", session=session)

    @contextmanager
    def session(self, sweep: str | None = None, *, every: float = HEARTBEAT_SECONDS) -> Iterator[str]:
        """Open a session and keep its heartbeat from a background thread until the block ends."""
        session = self.open_session(sweep)
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(every):
                try:
                    self.heartbeat(session)
                except (sqlite3.Error, GradleakError, OSError):
                    continue  # a missed beat is harmless; the next one retries

        thread = threading.Thread(target=beat, name="gradleak-store-heartbeat", daemon=True)
        thread.start()
        try:
            yield session
        finally:
            stop.set()
            thread.join(timeout=every + 5)
            try:
                self.end_session(session)
            except StoreError:
                # The store cannot be written (e.g. the disk is full): the error that stopped the
                # block says so. Runs still marked ``running`` here are taken over by the next
                # sweep, since this process (the session) will be gone.
                pass

    def _session_alive(self, con: sqlite3.Connection, session: str | None) -> bool:
        if session is None:
            return False
        row = con.execute("SELECT host, pid, heartbeat, ended FROM sessions WHERE session = ?", (session,)).fetchone()
        if row is None or row["ended"] is not None:
            return False
        if row["host"] == socket.gethostname() and row["pid"] is not None and not _pid_alive(int(row["pid"])):
            return False
        return time.time() - float(row["heartbeat"]) <= self.stale_after

    # ------------------------------------------------------------------ claims

    def claim(self, run_id: str, session: str, worker: str | None = None) -> Claim:
        """Take a run for ``session``; refused when done or held by another live session."""
        with self.transaction() as con:
            row = con.execute("SELECT status, session, attempts FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                return Claim(False, "missing")
            status, holder, attempts = row["status"], row["session"], int(row["attempts"])
            if status == "done":
                return Claim(False, "done", attempts)
            reason = "claimed"
            if status == "running":
                if holder != session and self._session_alive(con, holder):
                    return Claim(False, "busy", attempts)
                reason = "takeover"
            attempt = attempts + 1
            con.execute(
                "UPDATE runs SET status = 'running', session = ?, worker = ?, attempts = ?, started = ?, "
                "error = NULL WHERE run_id = ?",
                (session, worker, attempt, time.time(), run_id),
            )
            self._event(con, run_id, reason, session=session, worker=worker, attempt=attempt,
                        detail=None if reason == "claimed" else f"previous holder {holder}")
            return Claim(True, reason, attempt)

    def _settle(self, run_id: str, session: str, attempt: int | None, status: str, *, worker: str | None = None,
                **values: Any) -> bool:
        with self.transaction() as con:
            row = con.execute("SELECT status, session, attempts FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            current = (
                row is not None
                and row["status"] == "running"
                and row["session"] == session
                and (attempt is None or int(row["attempts"]) == attempt)
            )
            if not current:
                self._event(con, run_id, "rejected", session=session, worker=worker, attempt=attempt,
                            detail=f"{status} from an attempt that no longer holds the run")
                return False
            sets = ", ".join(f"{key} = ?" for key in values)
            con.execute(
                f"UPDATE runs SET status = ?, finished = ?{', ' + sets if sets else ''} WHERE run_id = ?",
                (status, time.time(), *values.values(), run_id),
            )
            self._event(con, run_id, status, session=session, worker=worker, attempt=attempt,
                        detail=values.get("error"))
            return True

    def finish(self, run_id: str, session: str, attempt: int | None, *, metrics: Mapping[str, Any],
               out_dir: str | None = None, artifacts: Sequence[str] = (), seconds: float | None = None,
               worker: str | None = None) -> bool:
        """Record a result; False (and nothing written) when this attempt no longer holds the run."""
        return self._settle(
            run_id, session, attempt, "done", worker=worker, metrics=_dumps(dict(metrics)), out_dir=out_dir,
            artifacts=_dumps(list(artifacts)), seconds=None if seconds is None or not math.isfinite(seconds) else seconds,
        )

    def fail(self, run_id: str, session: str, attempt: int | None, error: str, *, worker: str | None = None,
             seconds: float | None = None) -> bool:
        return self._settle(run_id, session, attempt, "failed", worker=worker, error=" ".join(str(error).split()),
                            seconds=seconds)


def _reopen(path: str, stale_after: float) -> Store:
    """The unpickled Store: no file access here. Unpickling runs inside Dask's message handling on a
    worker, where an exception (a full or failing disk) broke the worker's stream and left the sweep
    waiting forever; the task's first store call now raises it, and the task reports it."""
    store = Store.__new__(Store)
    store.path = Path(path)
    store.stale_after = stale_after
    return store
