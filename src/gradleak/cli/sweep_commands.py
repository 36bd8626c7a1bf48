"""``gradleak sweep``, ``gradleak report`` and ``gradleak utility`` (registered on import).

Dask is imported only when a sweep actually runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from gradleak.cli.parsing import OneLineParser
from gradleak.errors import GradleakError


def cmd_sweep(argv: Sequence[str]) -> int:
    parser = OneLineParser(
        prog="gradleak sweep",
        description=(
            "Run a grid of experiments (datasets x models x attacks x scenarios x defenses x batch sizes x "
            "indices x seeds) on Dask; results go to SWEEP_DIR/store.sqlite, pictures to SWEEP_DIR/runs/. "
            "Re-running skips finished runs. Config schema: see configs/*.toml or gradleak.sweep.grid."
        ),
    )
    parser.add_argument("config", metavar="CONFIG.toml", help="sweep config (see configs/)")
    parser.add_argument("--out", default=None, metavar="SWEEP_DIR", help="sweep folder (default sweeps/<name>)")
    parser.add_argument("--workers", type=int, default=None, help="embedded LocalCluster workers (default: one per core)")
    parser.add_argument("--scheduler", default=None, metavar="tcp://HOST:8786",
                        help="use an existing Dask cluster (its workers must see SWEEP_DIR at the same path)")
    parser.add_argument("--skip-failed", action="store_true", help="do not retry runs that failed before")
    parser.add_argument("--dry-run", action="store_true", help="list the runs (and which are done) and exit")
    parser.add_argument("--no-report", action="store_true", help="do not write SWEEP_DIR/report/ at the end")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--dashboard", default=None, metavar="HOST:PORT",
                        help="serve the embedded cluster's Dask dashboard (no password) here; default: a free "
                        "port on 127.0.0.1 only")
    parser.add_argument("--max-runs", type=int, default=None, metavar="N",
                        help="refuse a grid of more than N runs, counted before it is expanded (default 100000)")
    args = parser.parse_args(list(argv))
    if args.max_runs is not None and args.max_runs < 1:
        raise GradleakError(f"--max-runs must be at least 1 (got {args.max_runs})")
    if args.workers is not None and args.workers < 1:
        raise GradleakError(f"--workers must be at least 1 (got {args.workers})")
    if args.workers is not None and args.scheduler:
        raise GradleakError("give either --workers (embedded cluster) or --scheduler (existing cluster), not both")
    if args.dashboard is not None:
        if args.scheduler:
            raise GradleakError("--dashboard applies to the embedded cluster: drop it (an existing --scheduler has its own)")
        from gradleak.sweep.engine import dashboard_address

        dashboard_address(args.dashboard)  # a bad address is refused before any work

    from gradleak.sweep.grid import DEFAULT_MAX_RUNS, load_plan

    plan = load_plan(args.config, max_runs=args.max_runs or DEFAULT_MAX_RUNS)
    sweep_dir = Path(args.out) if args.out else Path("sweeps") / plan.name
    for note in plan.skipped:
        print(f"note: skipped: {note}")
    if args.dry_run:
        from gradleak.sweep.engine import store_path
        from gradleak.sweep.store import Store

        path = store_path(sweep_dir)
        status: dict[str, str] = {}
        if path.is_file() and path.stat().st_size == 0:
            print(f"note: {path} is empty (0 bytes): no run recorded yet; gradleak sweep starts it afresh")
        elif path.is_file():
            store = Store(path, create=False)
            store.check()
            status = store.statuses()
        for run in plan.runs:
            print(f"{run.run_id}  {status.get(run.run_id, 'new'):<8} {run.label}")
        print(f"{len(plan.runs)} runs ({len(plan.attack_runs)} attack, {len(plan.utility_runs)} utility); "
              f"{sum(1 for r in plan.runs if status.get(r.run_id) == 'done')} done in {sweep_dir}")
        return 0

    from gradleak.sweep.engine import run_sweep

    summary = run_sweep(
        plan, sweep_dir, workers=args.workers, scheduler=args.scheduler, retry_failed=not args.skip_failed,
        progress=not args.quiet, dashboard=args.dashboard,
    )
    where = f"on {summary.workers} worker(s)" if summary.workers else "(nothing to run)"
    print(
        f"sweep {plan.name}: {summary.planned} runs, {summary.already_done} already done, {summary.submitted} submitted: "
        f"{summary.done} done, {summary.failed} failed, {summary.lost} lost, {summary.busy} held by another sweep; "
        f"{summary.seconds:.1f} s {where}"
        + (f", {summary.runs_per_minute:.1f} runs/min" if summary.done else "")
    )
    for failure in summary.failures[:10]:
        print(f"  failed: {failure}")
    if len(summary.failures) > 10:
        print(f"  ... and {len(summary.failures) - 10} more (see the report)")
    print(f"store: {sweep_dir / 'store.sqlite'}")
    if not args.no_report:
        from gradleak.report.sweep_report import write_sweep_report

        files = write_sweep_report(sweep_dir)
        print(f"report: {files.html}")
    return 1 if summary.failed or summary.lost else 0


def cmd_report(argv: Sequence[str]) -> int:
    parser = OneLineParser(
        prog="gradleak report",
        description=(
            "Write tables (Markdown, CSV), plots and a self-contained report.html for a sweep folder "
            "(into SWEEP_DIR/report/) or for one run folder (RUN_DIR/report.html)."
        ),
    )
    parser.add_argument("path", metavar="SWEEP_DIR|RUN_DIR")
    parser.add_argument("--out", default=None,
                        help="report folder for a sweep (default SWEEP_DIR/report), report.html path for a run")
    parser.add_argument("--success-psnr", type=float, default=None,
                        help="PSNR (dB) from which an image counts as recovered (default: the sweep's, else 30)")
    args = parser.parse_args(list(argv))
    from gradleak.report.sweep_report import write_report

    html = write_report(args.path, out=args.out, success_psnr=args.success_psnr)
    print(f"report: {html}")
    return 0


def cmd_utility(argv: Sequence[str]) -> int:
    from gradleak.defenses import defense_help
    from gradleak.utility import UtilityConfig

    defaults = UtilityConfig()
    parser = OneLineParser(
        prog="gradleak utility",
        description=(
            "Train the model under a defense (each minibatch gradient defended exactly as the client "
            "shares it) and report test accuracy beside the undefended run with the same seed."
        ),
    )
    parser.add_argument("--dataset", default=defaults.dataset,
                        help="digits (scikit-learn's bundled 8x8 digits as 1x28x28, offline) or a gradleak dataset")
    parser.add_argument("--model", default=None, help="model (default: fits the dataset)")
    parser.add_argument("--defense", action="append", default=[], metavar="SPEC", help=defense_help())
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help=f"epochs (default {defaults.epochs})")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size,
                        help=f"minibatch size (default {defaults.batch_size})")
    parser.add_argument("--lr", type=float, default=defaults.lr, help=f"SGD learning rate (default {defaults.lr})")
    parser.add_argument("--momentum", type=float, default=defaults.momentum, help="SGD momentum (default 0)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed (default 0)")
    parser.add_argument("--train-size", type=int, default=0, help="train on a random subset of this size (0 = all)")
    parser.add_argument("--test-size", type=int, default=0, help="test on a random subset of this size (0 = all)")
    parser.add_argument("--data-root", default="./data", help="where gradleak datasets live (default ./data)")
    parser.add_argument("--no-download", action="store_true", help="never download a gradleak dataset")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N, auto")
    parser.add_argument("--out", default=None, help="also write utility.json into this folder")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    args = parser.parse_args(list(argv))

    from gradleak.utility import check_utility_config, compare

    config = UtilityConfig(
        dataset=args.dataset, model=args.model, defenses=list(args.defense), epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, momentum=args.momentum, seed=args.seed,
        train_size=args.train_size, test_size=args.test_size, data_root=args.data_root,
        download=not args.no_download, device=args.device,
    )
    check_utility_config(config)

    def progress(epoch: int, accuracy: float) -> None:
        if not args.quiet:
            print(f"  epoch {epoch}: test accuracy {accuracy:.1%}", flush=True)

    baseline, defended = compare(config, progress=progress)
    name = ", ".join(defended.defenses) or "none"
    print(f"dataset {args.dataset} ({baseline.train_size} train / {baseline.test_size} test), model {baseline.model}, "
          f"{args.epochs} epoch(s)")
    print(f"undefended: test accuracy {baseline.accuracy:.1%} ({baseline.seconds:.1f} s)")
    if config.defenses:
        print(f"{name}: test accuracy {defended.accuracy:.1%} ({defended.seconds:.1f} s); "
              f"cost {100 * (baseline.accuracy - defended.accuracy):+.1f} points")
        if defended.dp_epsilon is not None:
            print(f"DP-SGD privacy: epsilon {defended.dp_epsilon:.3g} at delta {defended.dp_delta:g} "
                  f"over {defended.config['epochs']} epoch(s) (RDP accountant, dp-accounting)")
    if args.out:
        from gradleak.io.files import write_json

        out = Path(args.out)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise GradleakError(f"cannot create --out {out}: {error}") from None
        write_json(out / "utility.json", {"undefended": baseline.as_dict(), "defended": defended.as_dict(),
                                          "accuracy_cost": baseline.accuracy - defended.accuracy})
        print(f"results in {out / 'utility.json'}")
    return 0
