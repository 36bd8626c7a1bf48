"""Run a sweep's runs on Dask (``dask.distributed``) and record each in the store.

By default an embedded ``LocalCluster`` is started: one worker process per core (or
``workers``), one thread per worker, and each task pins torch to one thread, so runs do not
fight over cores. ``scheduler="tcp://HOST:8786"`` uses an existing cluster instead; its workers
must see ``SWEEP_DIR`` at the same path (a shared filesystem: runs write their pictures there and
the SQLite store lives there) and have gradleak installed.

Each task claims its run in the store (a transaction), runs
:func:`gradleak.experiment.run_experiment` (or the utility training) with its outputs under
``SWEEP_DIR/runs/<run_id>/`` and records the result. A run already ``done`` is skipped before
submission and again at claim time (another sweep may have finished it meanwhile). When a
worker process dies mid-run, Dask's scheduler re-runs the task on another worker (up to
``distributed.scheduler.allowed-failures`` times); the new attempt takes the run over in the
store and overwrites the dead attempt's partial outputs, so nothing is lost or recorded twice.
Runs whose ``device`` is ``cuda`` are submitted with ``resources={"GPU": 1}``: start remote
workers with ``--resources GPU=1``; the embedded cluster grants that resource to one worker
per visible GPU.

Dask is imported only inside these functions: ``import gradleak`` never needs it.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gradleak.errors import GradleakError
from gradleak.sweep.grid import PlannedRun, SweepPlan
from gradleak.sweep.store import Store, StoreError

STORE_NAME = "store.sqlite"
CONFIG_NAME = "sweep.toml"
RUNS_DIR = "runs"


@dataclass
class SweepSummary:
    name: str
    sweep_dir: str
    planned: int
    already_done: int
    submitted: int
    done: int = 0
    failed: int = 0
    busy: int = 0  # held by another live sweep on the same store
    lost: int = 0  # tasks Dask gave up on (worker died too often)
    rejected: int = 0  # results refused because a newer attempt held the run
    seconds: float = 0.0
    run_seconds: float = 0.0  # from the first task start to the last finish
    workers: int = 0
    scheduler: str = ""
    failures: list[str] = field(default_factory=list)

    @property
    def runs_per_minute(self) -> float:
        return 60.0 * self.done / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "runs_per_minute": round(self.runs_per_minute, 3)}


def store_path(sweep_dir: str | Path) -> Path:
    return Path(sweep_dir) / STORE_NAME


def is_gpu_run(run: PlannedRun) -> bool:
    return str(run.config.get("device", "cpu")).startswith("cuda")


# --------------------------------------------------------------------------- the task


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return f"{get_worker().address} pid {os.getpid()}"
    except (ImportError, ValueError):  # not inside a Dask worker
        return f"{socket.gethostname()} pid {os.getpid()}"


def _clean_partials(run_dir: Path) -> None:
    """Remove staging folders a killed attempt left beside ``run_dir``."""
    for partial in run_dir.parent.glob(f".{run_dir.name}.partial-*"):
        shutil.rmtree(partial, ignore_errors=True)


def _artifacts(run_dir: Path, sweep_dir: Path) -> list[str]:
    if not run_dir.is_dir():
        return []
    return sorted(str(p.relative_to(sweep_dir)) for p in run_dir.iterdir() if p.is_file())


def execute_planned(store: Store, sweep_dir: str, run: dict[str, Any], session: str) -> dict[str, Any]:
    """The Dask task: claim ``run``, execute it, record the outcome. Never raises for a bad run."""
    import torch

    torch.set_num_threads(1)
    worker = _worker_name()
    run_id, kind = run["run_id"], run["kind"]
    try:
        claim = store.claim(run_id, session, worker)
    except GradleakError as error:  # the store cannot be opened or written (full disk, damaged): the sweep stops
        return {"run_id": run_id, "status": "store_error", "worker": worker, "error": str(error)}
    if not claim.ok:  # finished meanwhile (another sweep) or held by another live sweep
        return {"run_id": run_id, "status": "already_done" if claim.reason == "done" else claim.reason, "worker": worker}
    sweep_path = Path(sweep_dir)
    run_dir = sweep_path / RUNS_DIR / run_id
    started = time.time()
    try:
        _clean_partials(run_dir)
        if kind == "attack":
            metrics = _run_attack(run, run_dir)
        elif kind == "utility":
            metrics = _run_utility(run, run_dir)
        else:
            raise GradleakError(f"unknown run kind {kind!r}")
        recorded = store.finish(
            run_id, session, claim.attempt, metrics=metrics, out_dir=str(run_dir.relative_to(sweep_path)),
            artifacts=_artifacts(run_dir, sweep_path), seconds=time.time() - started, worker=worker,
        )
        status = "done" if recorded else "rejected"
        return {"run_id": run_id, "status": status, "worker": worker, "attempt": claim.attempt,
                "started": started, "finished": time.time(), "psnr": metrics.get("psnr")}
    except Exception as error:  # noqa: BLE001 - a bad run is recorded as failed, the sweep goes on
        message = str(error) if isinstance(error, GradleakError) else _describe(error)
        try:
            if isinstance(error, StoreError):
                raise error
            store.fail(run_id, session, claim.attempt, message, worker=worker, seconds=time.time() - started)
        except StoreError as store_error:
            # Nothing can be recorded: returned (not raised), so Dask neither retries nor logs a
            # task error; the row stays ``running`` under this session and the next sweep takes it over.
            return {"run_id": run_id, "status": "store_error", "worker": worker, "error": str(store_error),
                    "started": started, "finished": time.time()}
        return {"run_id": run_id, "status": "failed", "worker": worker, "error": message,
                "started": started, "finished": time.time()}


def _describe(error: BaseException) -> str:
    """One line for an unexpected error: type, message and where it was raised."""
    frames = traceback.extract_tb(error.__traceback__)
    where = f" ({frames[-1].filename.rsplit(os.sep, 1)[-1]}:{frames[-1].lineno})" if frames else ""
    return f"{type(error).__name__}: {error}{where}"


def _run_attack(run: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    from gradleak.experiment import RunConfig, run_experiment

    config = RunConfig(**{**run["config"], "out": str(run_dir), "overwrite": True, "quiet": True})
    outcome = run_experiment(config)
    return dict(outcome.metrics)


def _run_utility(run: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    from gradleak.io.files import write_json
    from gradleak.utility import UtilityConfig, train_under_defense

    result = train_under_defense(UtilityConfig(**run["config"]))
    metrics = result.as_dict()
    metrics.pop("config", None)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "utility.json", {**metrics, "config": run["config"]})
    return metrics


# --------------------------------------------------------------------------- the cluster


def _require_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise GradleakError(
            "gradleak sweep needs Dask: pip install 'gradleak[sweep]' (dask[distributed])"
        ) from None
    return distributed


async def _grant_gpu(dask_worker: Any, index: int) -> None:  # runs on a worker
    os.environ["CUDA_VISIBLE_DEVICES"] = str(index)
    await dask_worker.set_resources(GPU=1)


LOOPBACK_DASHBOARD = "127.0.0.1:0"  # a free port on this machine only: never clashes, never exposed


def dashboard_address(requested: str | None) -> str:
    """Where the embedded cluster's dashboard listens: loopback unless an address is asked for.

    The dashboard has no password and shows (and lets anyone cancel) the sweep's tasks, so it is
    never bound to all interfaces by default; ``":8787"`` (no host) also stays on loopback.

    >>> dashboard_address(None), dashboard_address(":8787"), dashboard_address("0.0.0.0:8787")
    ('127.0.0.1:0', '127.0.0.1:8787', '0.0.0.0:8787')
    """
    if requested is None:
        return LOOPBACK_DASHBOARD
    host, sep, port = requested.strip().rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise GradleakError(f"--dashboard {requested!r} is not HOST:PORT: give e.g. 127.0.0.1:8787")
    return f"{host or '127.0.0.1'}:{port}"


def start_client(*, workers: int | None = None, scheduler: str | None = None, gpus: int = 0,
                 quiet: bool = True, dashboard: str | None = None) -> tuple[Any, Any]:
    """(client, cluster or None): the embedded LocalCluster, or a client of ``scheduler``.

    The embedded cluster listens on loopback only (scheduler, workers and, unless ``dashboard``
    names another address, the dashboard)."""
    import logging

    distributed = _require_distributed()
    if scheduler:
        try:
            client = distributed.Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as error:
            raise GradleakError(f"cannot reach the Dask scheduler at {scheduler}: {error}") from None
        return client, None
    n = workers or os.cpu_count() or 1
    if n < 1:
        raise GradleakError(f"--workers must be at least 1 (got {n})")
    address = dashboard_address(dashboard)
    cluster = distributed.LocalCluster(
        n_workers=n,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=address,
        silence_logs=logging.ERROR if quiet else logging.WARNING,
        env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    )
    client = distributed.Client(cluster)
    if gpus:
        addresses = sorted(client.scheduler_info()["workers"])[:gpus]
        for index, address in enumerate(addresses):
            client.run(_grant_gpu, index=index, workers=[address])
    return client, cluster


def _gpu_workers(client: Any) -> int:
    info = client.scheduler_info()["workers"]
    return sum(1 for w in info.values() if w.get("resources", {}).get("GPU", 0) >= 1)


# --------------------------------------------------------------------------- the sweep


def prepare_sweep_dir(plan: SweepPlan, sweep_dir: str | Path) -> Store:
    """Create the folder and store, save the config, add the plan's runs (existing ones kept)."""
    from gradleak.io.files import write_text

    sweep_dir = Path(sweep_dir)
    if sweep_dir.exists() and not sweep_dir.is_dir():
        raise GradleakError(f"sweep folder {sweep_dir} is a file: choose another --out")
    try:
        (sweep_dir / RUNS_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise GradleakError(f"cannot create sweep folder {sweep_dir}: {error}") from None
    store = Store(store_path(sweep_dir))
    store.check()  # never add to (or trust the statuses of) a store with damaged pages
    if plan.source:
        write_text(sweep_dir / CONFIG_NAME, plan.source)
    store.add_runs(plan.runs, sweep=plan.name)
    return store


def run_sweep(
    plan: SweepPlan,
    sweep_dir: str | Path,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    retry_failed: bool = True,
    progress: bool = True,
    client: Any = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    dashboard: str | None = None,
) -> SweepSummary:
    """Execute every run of ``plan`` not yet done; return counts and timings.

    ``client`` may be an existing ``distributed.Client`` (tests); otherwise one is started
    (embedded LocalCluster, or ``scheduler``) and closed at the end. ``on_result`` is called in
    the client with each task's result dict as it arrives. ``dashboard`` (HOST:PORT) exposes the
    embedded cluster's dashboard there; by default it is on a loopback port only.
    """
    start = time.perf_counter()
    sweep_dir = Path(sweep_dir).absolute()
    store = prepare_sweep_dir(plan, sweep_dir)
    status = store.statuses([r.run_id for r in plan.runs])
    todo = [
        r for r in plan.runs
        if status.get(r.run_id) != "done" and (retry_failed or status.get(r.run_id) != "failed")
    ]
    summary = SweepSummary(
        name=plan.name, sweep_dir=str(sweep_dir), planned=len(plan.runs),
        already_done=sum(1 for r in plan.runs if status.get(r.run_id) == "done"), submitted=len(todo),
    )
    if not todo:
        summary.seconds = time.perf_counter() - start
        return summary
    gpu_runs = [r for r in todo if is_gpu_run(r)]
    gpus = 0
    if gpu_runs and client is None and not scheduler:
        import torch

        gpus = torch.cuda.device_count()
        if gpus == 0:
            raise GradleakError(
                f"{len(gpu_runs)} run(s) ask for device cuda but this machine has no CUDA GPU: "
                "set device = \"cpu\" in [run] or use --scheduler with GPU workers"
            )
    own_client = client is None
    cluster = None
    if own_client:
        client, cluster = start_client(workers=workers, scheduler=scheduler, gpus=gpus, dashboard=dashboard)
    try:
        info = client.scheduler_info()
        summary.workers = len(info.get("workers", {}))
        summary.scheduler = str(info.get("address", ""))
        if gpu_runs and _gpu_workers(client) == 0:
            raise GradleakError(
                f"{len(gpu_runs)} run(s) ask for device cuda but no Dask worker has a GPU resource: "
                "start workers with --resources GPU=1"
            )
        _execute(plan, todo, store, sweep_dir, client, summary, progress=progress, on_result=on_result)
    finally:
        if own_client:
            client.close()
            if cluster is not None:
                cluster.close()
    summary.seconds = time.perf_counter() - start
    return summary


def _execute(plan: SweepPlan, todo: list[PlannedRun], store: Store, sweep_dir: Path, client: Any,
             summary: SweepSummary, *, progress: bool, on_result: Callable[[dict[str, Any]], None] | None) -> None:
    distributed = _require_distributed()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc=f"sweep {plan.name}", unit="run", dynamic_ncols=True, file=sys.stderr)
    first_start, last_finish = float("inf"), 0.0
    store_failure: str | None = None
    with store.session(plan.name) as session:
        futures = {}
        for run in todo:
            future = client.submit(
                execute_planned, store, str(sweep_dir), asdict(run), session,
                key=f"gradleak-run-{run.run_id}-{session[:8]}", pure=False, retries=2,
                resources={"GPU": 1} if is_gpu_run(run) else None,
            )
            futures[future] = run
        try:
            for future in distributed.as_completed(futures):
                run = futures[future]
                try:
                    result = future.result()
                except Exception as error:  # noqa: BLE001 - KilledWorker after too many deaths, or a store error
                    message = f"{type(error).__name__}: {error}"
                    result = {"run_id": run.run_id, "status": "lost", "error": message}
                    try:
                        store.fail(run.run_id, session, None, f"task lost: {message}")
                    except StoreError as store_error:
                        result = {"run_id": run.run_id, "status": "store_error", "error": str(store_error)}
                state = result.get("status")
                if state == "store_error":  # every further run would fail alike: stop here
                    store_failure = str(result.get("error"))
                    break
                if state == "done":
                    summary.done += 1
                elif state == "failed":
                    summary.failed += 1
                    summary.failures.append(f"{run.label}: {result.get('error')}")
                elif state == "lost":
                    summary.lost += 1
                    summary.failures.append(f"{run.label}: {result.get('error')}")
                elif state == "busy":
                    summary.busy += 1
                elif state == "already_done":
                    summary.already_done += 1
                elif state == "rejected":
                    summary.rejected += 1
                if "started" in result:
                    first_start = min(first_start, float(result["started"]))
                    last_finish = max(last_finish, float(result["finished"]))
                if on_result is not None:
                    on_result(result)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(done=summary.done, failed=summary.failed, refresh=False)
        finally:
            if bar is not None:
                bar.close()
            for future in futures:
                future.cancel()
    if last_finish > first_start:
        summary.run_seconds = last_finish - first_start
    if store_failure is not None:
        raise StoreError(f"sweep {plan.name} stopped after {summary.done} of {len(todo)} run(s): {store_failure}")
