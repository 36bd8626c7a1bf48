"""Benchmark: DLG's early stop against the same DLG spending its whole budget (the original), same run.

    python benchmarks/dlg_early_stop.py --iters 1200 --sets mnist:0-1

Each image is attacked twice from the same seed (1234, LeNet, one thread), as `python main.py
--dataset D --split test --index I --iters N` builds it: once with the default early stop (30
iterations without a 0.1% fall of the gradient distance end the attack) and once with
`--early-stop 0` (every iteration of the budget, as the original). Until the stop both runs are
the same computation, so the stop costs nothing in PSNR when the run had converged; the table
shows iterations, the attack's own seconds and PSNR of both, and the time ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from gradleak.experiment import RunConfig, prepare  # noqa: E402
from gradleak.metrics import score_batch  # noqa: E402


def attack(dataset: str, index: int, iters: int, early_stop: int | None, scratch: Path) -> tuple[int, float, float, str]:
    config = RunConfig(dataset=dataset, indices=[index], split="test", iterations=iters, attack="dlg", seed=1234,
                       early_stop=early_stop, threads=1, device="cpu", quiet=True, out=str(scratch / "unused"),
                       overwrite=True, download=False)
    prepared = prepare(config)
    generator = torch.Generator().manual_seed(config.seed)
    result = prepared.attack.run(prepared.model, prepared.update, generator=generator)
    score = score_batch(result.images, prepared.images, true_labels=prepared.labels, recovered_labels=result.labels)
    return result.iterations, result.seconds, score.psnr, result.stop_reason


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=1200, help="the classic MNIST command's budget")
    parser.add_argument("--sets", nargs="+", default=["mnist:0-1"], help="DATASET:FIRST-LAST")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        attack("mnist", 0, 2, None, Path(scratch))  # warm-up: imports and first-call costs out of the timings
        for spec in args.sets:
            dataset, _, span = spec.partition(":")
            first, _, last = span.partition("-")
            for index in range(int(first), int(last or first) + 1):
                stop = attack(dataset, index, args.iters, None, Path(scratch))
                full = attack(dataset, index, args.iters, 0, Path(scratch))
                rows.append((dataset, index, stop, full))
                print(f"| {dataset} {index} | {stop[0]} | {stop[1]:.1f} | {stop[2]:.1f} | {stop[3]} | {full[0]} | "
                      f"{full[1]:.1f} | {full[2]:.1f} | {full[1] / max(stop[1], 1e-9):.1f}× |", flush=True)
    ratio = statistics.median(f[1] / max(s[1], 1e-9) for _, _, s, f in rows)
    print(f"median time ratio (whole budget / early stop): {ratio:.1f}×; "
          f"PSNR change: {max(abs(s[2] - f[2]) for _, _, s, f in rows):.2f} dB at most")


if __name__ == "__main__":
    print("| image | early stop: iterations | s | PSNR dB | stop | whole budget: iterations | s | PSNR dB | time ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    main()
