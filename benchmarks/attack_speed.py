"""Benchmark: gradleak's default attack against the original DLG, same images, one process, one thread.

    python benchmarks/attack_speed.py            # the full benchmark (about 15-25 minutes on 2 cores)
    python benchmarks/attack_speed.py --quick    # 3 images per set, batches of 4 only (a smoke run)

Reference: the original DLG loop (benchmarks/reference_dlg.py), 300 L-BFGS steps, seed 1234, timed to
the step where it *first* reaches 30 dB, checked against the ground truth with the clock stopped (an
oracle stop that favours the reference). gradleak: ``auto`` (what ``gradleak run`` uses), self-stopping,
total wall time, never shown the ground truth. Success = PSNR ≥ 30 dB (batches: after optimal matching).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from reference_dlg import build_reference, run_reference_dlg  # noqa: E402

from gradleak.attacks import Auto  # noqa: E402
from gradleak.data import load_samples  # noqa: E402
from gradleak.metrics import match_reconstructions, psnr, score_batch  # noqa: E402
from gradleak.models import build_model  # noqa: E402
from gradleak.scenarios import FedSGD  # noqa: E402

SEED = 1234
THRESHOLD = 30.0


def matched_psnr(images: torch.Tensor, targets: torch.Tensor) -> float:
    order = match_reconstructions(images.clamp(0, 1), targets) if targets.shape[0] > 1 else [0]
    return min(psnr(images[order][i].clamp(0, 1), targets[i]) for i in range(targets.shape[0]))


def one_case(dataset: str, indices: list[int], *, ig_iterations: int) -> dict[str, object]:
    images, labels = load_samples(dataset, indices, split="test", download=False, root="/nonexistent")
    channels, side = images.shape[1], images.shape[2]
    classes = 100 if dataset == "cifar100" else 10
    # Reference: the original algorithm, oracle-stopped at the first step with every image ≥ 30 dB.
    net = build_reference(channels, side, classes, SEED)
    ref = run_reference_dlg(
        net, images, labels, classes, reached=lambda dummy: matched_psnr(dummy, images) >= THRESHOLD
    )
    ref_psnr = matched_psnr(ref["dummy"], images)  # type: ignore[arg-type]
    # gradleak: same model weights (same seed, same construction order), default attack.
    torch.manual_seed(SEED)
    model = build_model("lenet" if channels == 3 else "lenetmnist", channels=channels, image_size=side, num_classes=classes)
    update = FedSGD().share(model, images, labels)
    start = time.perf_counter()
    result = Auto(iterations=ig_iterations).run(model, update)
    total = time.perf_counter() - start
    score = score_batch(result.images, images, true_labels=labels, recovered_labels=result.labels)
    return {
        "dataset": dataset,
        "indices": indices,
        "labels": labels.tolist(),
        "ref_psnr": ref_psnr,
        "ref_seconds": ref["seconds_to_30db"],
        "ref_labels_ok": sorted(ref["labels"]) == sorted(labels.tolist()),  # type: ignore[arg-type]
        "gl_psnrs": [s.psnr for s in score.per_image],
        "gl_seconds": total,
        "gl_labels_ok": score.label_accuracy == 1.0,
        "gl_method": method_of(result.extras),
    }


def method_of(extras: dict[str, float | str | bool]) -> str:
    if extras.get("auto_choice") != "analytic":
        return "ig" if extras.get("auto_choice") == "ig" else "analytic+L-BFGS"
    prior = int(extras.get("layers_fitted_with_prior", 0))
    return f"analytic, TV prior on {prior} layers" if prior else "analytic"


def fmt_db(value: float) -> str:
    return "inf" if value == float("inf") else f"{value:.1f}"


def report(title: str, rows: list[dict[str, object]]) -> dict[str, float]:
    print(f"\n### {title}\n")
    print("| images | labels | reference PSNR | reference s to 30 dB | gradleak PSNR (min) | gradleak s | method | labels ok (ref/gl) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        gl = min(r["gl_psnrs"])  # type: ignore[type-var]
        ref_s = "—" if r["ref_seconds"] is None else f"{r['ref_seconds']:.2f}"
        print(
            f"| {' '.join(map(str, r['indices']))} | {' '.join(map(str, r['labels']))} | {fmt_db(r['ref_psnr'])} | {ref_s} "  # type: ignore[arg-type]
            f"| {fmt_db(gl)} | {r['gl_seconds']:.2f} | {r['gl_method']} | {'y' if r['ref_labels_ok'] else 'n'}/{'y' if r['gl_labels_ok'] else 'n'} |"
        )
    images = sum(len(r["indices"]) for r in rows)  # type: ignore[arg-type, misc]
    ref_ok = sum(len(r["indices"]) for r in rows if r["ref_seconds"] is not None)  # type: ignore[arg-type, misc]
    gl_ok = sum(sum(p >= THRESHOLD for p in r["gl_psnrs"]) for r in rows)  # type: ignore[union-attr, attr-defined]
    ref_times = [r["ref_seconds"] for r in rows if r["ref_seconds"] is not None]
    gl_times = [r["gl_seconds"] for r in rows]
    ref_median = statistics.median(ref_times) if ref_times else float("nan")  # type: ignore[type-var]
    gl_median = statistics.median(gl_times)  # type: ignore[type-var]
    ratio = gl_median / ref_median if ref_times else float("nan")
    labels_ok = sum(bool(r["gl_labels_ok"]) for r in rows)
    all_psnrs = [p for r in rows for p in r["gl_psnrs"]]  # type: ignore[attr-defined]
    median_psnr = statistics.median(all_psnrs)
    ratio_text = f"{ratio:.3f} (1/{1 / ratio:.0f})" if ratio == ratio and ratio > 0 else "n/a (the reference never reached 30 dB)"
    print(
        f"\n**{title}**: reference {ref_ok}/{images} images ≥30 dB, median {ref_median:.2f} s to 30 dB (successes only); "
        f"gradleak {gl_ok}/{images} images ≥30 dB (median {fmt_db(median_psnr)} dB), labels exact in {labels_ok}/{len(rows)} cases, median {gl_median:.3f} s total; "
        f"ratio gradleak/reference = {ratio_text}"
    )
    return {"ratio": ratio, "gl_ok": gl_ok, "images": images}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 images per set and batches of 4 only")
    parser.add_argument("--ig-iterations", type=int, default=2000, help="Inverting Gradients budget for fallbacks")
    parser.add_argument(
        "--sets", default="cifar100,mnist,batch4,batch8",
        help="comma-separated subset of cifar100,mnist,batch4,batch8 (default: all)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    count = 3 if args.quick else 20
    print(f"# attack_speed — {time.strftime('%Y-%m-%d %H:%M')}, torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} thread")
    sets = set(args.sets.split(","))
    for dataset in ("cifar100", "mnist"):
        if dataset not in sets:
            continue
        rows = [one_case(dataset, [i], ig_iterations=args.ig_iterations) for i in range(count)]
        report(f"{dataset}, single images", rows)
    sizes = (4,) if args.quick else (4, 8)
    for size in sizes:
        if f"batch{size}" not in sets:
            continue
        groups = [list(range(s, s + size)) for s in range(0, 20 - size + 1, size)][: (1 if args.quick else None)]
        rows = [one_case("cifar100", g, ig_iterations=args.ig_iterations) for g in groups]
        report(f"cifar100, batches of {size}", rows)


if __name__ == "__main__":
    main()
