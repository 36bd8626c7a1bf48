"""Benchmark: the single-try original DLG against DLG with its stall guard, same images, same seeds, same run.

    python benchmarks/dlg_restarts.py                       # everything (~40 min on one busy thread)
    python benchmarks/dlg_restarts.py --sets cifar100 --limit 5   # 5 bundled + 5 held-out images

The classic README commands, exactly as `python main.py` builds them (seed 1234, LeNet, one thread):
`--dataset cifar100 --iters 300` and `--dataset mnist --iters 1200`, once with `--restarts 1` (the
original: one N(0, 1) start, L-BFGS to the end) and once with the default guard (up to 8 tries in the
same 300/1200-iteration budget). Images: the 20 bundled test images of each dataset, and images the
bundled sets do not hold, given through `--image` as a new user would: the first 10 bundled CIFAR-10
(resp. Fashion-MNIST) test images with their own label, and three scikit-image pictures (astronaut,
coffee, chelsea; resized/centre-cropped by the same loader, grayscale for MNIST) with labels 0, 1, 2.

Success = final PSNR >= 30 dB (what the user gets at the end of the command, not an oracle stop).
Times are the attack's own wall time (the scoring observer's time excluded): the whole command's
attack, and the time to the first >= 30 dB state (measured with the clock stopped while scoring).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from gradleak.experiment import RunConfig, prepare  # noqa: E402
from gradleak.metrics import psnr  # noqa: E402
from gradleak.types import StepReport  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[1] / "src" / "gradleak" / "data" / "samples"
THRESHOLD = 30.0
SETS = {
    # name: (dataset, iterations, held-out bundled prefix)
    "cifar100": ("cifar100", 300, "cifar10"),
    "mnist": ("mnist", 1200, "fashionMNIST"),
}


def skimage_pictures(folder: Path) -> list[tuple[str, int]]:
    """astronaut, coffee, chelsea written as PNGs (the loader resizes them like any --image)."""
    from PIL import Image
    from skimage import data

    out = []
    for label, name in enumerate(("astronaut", "coffee", "chelsea")):
        path = folder / f"{name}.png"
        Image.fromarray(getattr(data, name)()).save(path)
        out.append((str(path), label))
    return out


def cases(name: str, folder: Path, limit: int | None, skip: int = 0) -> list[tuple[str, str, dict]]:
    dataset, _, held_out = SETS[name]
    bundled = [(f"{dataset} test {i}", "bundled", dict(indices=[i], split="test")) for i in range(20)]
    other = [(Path(path).name, "held-out", dict(images=[path], labels=[label])) for path, label in skimage_pictures(folder)]
    for path in sorted(SAMPLES.glob(f"{held_out}_*.png"))[:10]:
        label = int(path.stem.rsplit("_", 1)[1])
        other.append((path.name, "held-out", dict(images=[str(path)], labels=[label])))
    bundled, other = bundled[skip:], other[skip:]
    if limit:
        bundled, other = bundled[:limit], other[:limit]
    return bundled + other


def run_one(name: str, case: dict, restarts: int | None) -> dict:
    dataset, iterations, _ = SETS[name]
    config = RunConfig(
        dataset=dataset, iterations=iterations, attack="dlg", restarts=restarts, seed=1234, threads=1,
        quiet=True, download=False, data_root="/nonexistent-gradleak-root",
        num_classes=(100 if dataset == "cifar100" else 10) if "images" in case else None,
        out=tempfile.mkdtemp(prefix="gradleak-bench-"), overwrite=True, **case,
    )
    prepared = prepare(config)
    clock = {"start": 0.0, "paused": 0.0, "first": None}

    def observer(report: StepReport) -> None:
        paused = time.perf_counter()
        if clock["first"] is None and psnr(report.images.clamp(0, 1), prepared.images) >= THRESHOLD:
            clock["first"] = paused - clock["start"] - clock["paused"]
        clock["paused"] += time.perf_counter() - paused

    clock["start"] = time.perf_counter()
    result = prepared.attack.run(prepared.model, prepared.update, observer=observer)
    value = psnr(result.images, prepared.images)
    return {
        "psnr": value,
        "success": value >= THRESHOLD,
        "seconds": result.seconds,
        "seconds_to_30db": clock["first"],
        "tries": len(result.attempts),
        "reasons": [a.reason for a in result.attempts[:-1]],
        "label_right": bool(result.labels.tolist() == prepared.labels.tolist()),
    }


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def table(rows: list[dict]) -> str:
    lines = [
        "| set | images | variant | ≥30 dB | median PSNR | median attack s | median s to 30 dB (successes) | mean tries |",
        "|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["set"], row["group"]), []).append(row)
    for (set_name, group), items in groups.items():
        for variant in ("single", "guarded"):
            runs = [r[variant] for r in items]
            ok = [r for r in runs if r["success"]]
            lines.append(
                f"| {set_name} (iters {SETS[set_name][1]}) | {group} | {variant} | {len(ok)}/{len(runs)} | "
                f"{fmt(median([r['psnr'] for r in runs]))} | {fmt(median([r['seconds'] for r in runs]))} | "
                f"{fmt(median([r['seconds_to_30db'] for r in ok if r['seconds_to_30db'] is not None]))} | "
                f"{statistics.mean(r['tries'] for r in runs):.2f} |"
            )
        lost = sum(1 for r in items if r["single"]["success"] and not r["guarded"]["success"])
        lines.append(f"| | | single ok, guarded not | {lost} | | | | |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", choices=sorted(SETS), default=sorted(SETS))
    parser.add_argument(
        "--limit", type=int, default=None,
        help="at most this many images per group: bundled 0..N-1; held-out the scikit-image pictures first",
    )
    parser.add_argument("--skip", type=int, default=0, help="leave out the first N images of each group (to split a run)")
    parser.add_argument("--jsonl", default=None, help="also append one JSON line per image to this file")
    parser.add_argument("--table-from", nargs="+", default=None, metavar="JSONL",
                        help="print the table of rows saved by earlier --jsonl runs (no attack)")
    args = parser.parse_args()
    if args.table_from:
        saved = [json.loads(line) for path in args.table_from for line in Path(path).read_text().splitlines() if line]
        print(table(saved))
        return 0
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, one thread; success = final PSNR >= 30 dB")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as folder:
        for set_name in args.sets:
            for label, group, case in cases(set_name, Path(folder), args.limit, args.skip):
                row = {"set": set_name, "group": group, "image": label}
                row["single"] = run_one(set_name, case, restarts=1)
                row["guarded"] = run_one(set_name, case, restarts=None)
                rows.append(row)
                s, g = row["single"], row["guarded"]
                print(
                    f"{set_name:8s} {label:24s} single {s['psnr']:6.1f} dB {s['seconds']:6.1f} s | "
                    f"guarded {g['psnr']:6.1f} dB {g['seconds']:6.1f} s, {g['tries']} tries {g['reasons']}",
                    flush=True,
                )
                if args.jsonl:
                    with open(args.jsonl, "a", encoding="utf-8") as handle:
                        handle.write(json.dumps(row) + "\n")
    print()
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
