"""Run the example federation with Flower's local deployment, on 127.0.0.1 only.

Starts a SuperLink, N SuperNodes (``partition-id``/``num-partitions`` node config) and submits
this app with ``flwr run``, each on a free loopback port, with a private Flower home folder; waits
for the run to finish and stops every process it started (also on failure or Ctrl-C).

    python examples/flower_app/run_local.py --out /tmp/fl-audit --supernodes 2 \
        --run-config "num-server-rounds=2"

Results: ``OUT/audit/index.html`` (and ``audit.json``, ``round-RRR/client-ID/``), the Flower
logs in ``OUT/logs/``. The exit status is 0 when the run finished normally.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

APP_DIR = Path(__file__).resolve().parent
LOOPBACK = "127.0.0.1"
CONNECTION = "gradleak-local"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, timeout: float) -> None:
    """Wait until ``process`` accepts connections on ``port`` (or fail if it exits first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode} before listening on port {port}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((LOOPBACK, port)) == 0:
                return
        time.sleep(0.3)
    raise RuntimeError(f"{what} did not listen on {LOOPBACK}:{port} within {timeout:.0f} s")


def process_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, process group), read from /proc (Linux)."""
    table: dict[int, tuple[int, int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            table[int(entry.name)] = (int(fields[1]), int(fields[2]))
    return table


class Started:
    """The processes this script started, and the process groups of every descendant seen.

    Each Flower process starts in its own session; Flower's SuperExec starts yet another session
    for the ServerApp/ClientApp processes it launches, which outlive a killed parent (they are
    re-parented). So the groups of all descendants are recorded while the run goes on
    (:meth:`watch`) and every recorded group is stopped at the end (:meth:`stop_all`).
    """

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []
        self.groups: set[int] = set()

    def add(self, process: subprocess.Popen[bytes]) -> None:
        self.processes.append(process)
        self.groups.add(process.pid)  # start_new_session: the group id is the pid

    def watch(self) -> None:
        table = process_table()
        children: dict[int, list[int]] = {}
        for pid, (parent, _) in table.items():
            children.setdefault(parent, []).append(pid)
        stack = [p.pid for p in self.processes]
        while stack:
            for child in children.get(stack.pop(), []):
                self.groups.add(table[child][1])
                stack.append(child)

    def alive(self) -> list[int]:
        """Live (non-zombie) processes in the recorded groups."""
        alive = []
        for pid, (_, group) in process_table().items():
            if group in self.groups and pid != os.getpid():
                try:
                    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                except (OSError, IndexError):
                    continue
                if state != "Z":
                    alive.append(pid)
        return alive

    def stop_all(self) -> None:
        """TERM every recorded process group, then KILL what is left; reap our children."""
        self.watch()
        self.groups.discard(os.getpgrp())  # never our own group
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for group in self.groups:
                try:
                    os.killpg(group, sig)
                except (ProcessLookupError, PermissionError):
                    pass
            deadline = time.monotonic() + 5
            for process in self.processes:
                try:
                    process.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.2)
            if not self.alive():
                return


def flower_environment(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        FLWR_HOME=str(home),
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_UPDATE_CHECK="1",
        # Use this Python environment (gradleak, torch, opacus); never `uv sync` from the network.
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        PYTHONUNBUFFERED="1",
        # One thread per process: SuperLink, SuperNodes, ServerApp and ClientApps share the cores,
        # and oversubscribed torch threads slow everything by an order of magnitude.
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
    )
    # The Flower processes must import the same gradleak as this script (e.g. a source checkout).
    import gradleak

    source = str(Path(gradleak.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH", "")) if p)
    return env


def run_federation(out: Path, *, supernodes: int, run_config: str, timeout: float) -> int:
    """Start everything, run the app, stop everything; return ``flwr run``'s exit status."""
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"error: {out} exists and is not empty: pass a new folder")
    logs, home = out / "logs", out / "flwr-home"
    logs.mkdir(parents=True)
    home.mkdir()
    link_port = free_port()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
        f'address = "{LOOPBACK}:{link_port}"\ninsecure = true\n'
    )
    env = flower_environment(home)
    config = (
        f'audit-dir="{out / "audit"}" truth-dir="{out / "truth"}" min-nodes={supernodes} {run_config}'
    ).strip()
    started = Started()
    with ExitStack() as files:
        try:

            def start(what: str, command: list[str]) -> subprocess.Popen[bytes]:
                log = files.enter_context(open(logs / f"{what}.log", "wb"))
                process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=out,
                                           start_new_session=True)
                started.add(process)
                return process

            link = start("superlink", [
                "flower-superlink", "--insecure", "--host", LOOPBACK, "--port", str(link_port),
                "--disable-runtime-dependency-installation",
            ])
            wait_for_port(link_port, link, "the SuperLink", 120)
            nodes = []
            for partition in range(supernodes):  # start all, then wait: they come up in parallel
                node_port = free_port()
                nodes.append((node_port, start(f"supernode-{partition}", [
                    "flower-supernode", "--insecure", "--superlink", f"{LOOPBACK}:{link_port}",
                    "--host", LOOPBACK, "--port", str(node_port),
                    "--node-config", f"partition-id={partition} num-partitions={supernodes}",
                ])))
            for partition, (node_port, node) in enumerate(nodes):
                wait_for_port(node_port, node, f"SuperNode {partition}", 120)
            submit = start("flwr-run", ["flwr", "run", str(APP_DIR), CONNECTION, "--run-config", config, "--stream"])
            deadline = time.monotonic() + timeout
            while submit.poll() is None:
                if time.monotonic() > deadline:
                    print(f"error: the run did not finish within {timeout:.0f} s (logs in {logs})", file=sys.stderr)
                    return 124
                started.watch()
                time.sleep(1)
            status = submit.returncode
        finally:
            started.stop_all()
    finished = out / "audit" / "federation.json"
    if status == 0 and not finished.is_file():
        print(f"error: flwr run ended but the ServerApp wrote no {finished} (logs in {logs})", file=sys.stderr)
        return 1
    if status == 0:
        rows = json.loads(finished.read_text())["audited"]
        for row in rows:
            score = f"{row['psnr']:.1f} dB" if "psnr" in row else row.get("error", "unscored")
            print(f"round {row['round']} client {row['client']}: {row['status']} {score}")
        print(f"audit: {out / 'audit' / 'index.html'}")
    return status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="a new folder for logs and the audit")
    parser.add_argument("--supernodes", type=int, default=2, help="number of clients (default 2)")
    parser.add_argument("--run-config", default="", help="Flower run config overrides, e.g. 'num-server-rounds=3'")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for the run (default 600)")
    args = parser.parse_args()
    # Stopped from outside (a test's timeout, `kill`): unwind so that every Flower process is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(run_federation(args.out.resolve(), supernodes=args.supernodes, run_config=args.run_config,
                            timeout=args.timeout))


if __name__ == "__main__":
    main()
