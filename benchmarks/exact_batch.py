"""Exact batch leakage through a ReLU layer: spear against Inverting Gradients and DLG, same updates.

    python benchmarks/exact_batch.py                      # the RESULTS.md table (long: see --help)
    python benchmarks/exact_batch.py --ci                 # CI size: one batch of 4, seconds

For each dataset, scenario and batch size it builds the SPEAR-style ``mlp`` (width 1,000, seed 0),
lets the client share the update of bundled test images 0..B−1 (indices ≥ 20 are flipped/shifted
copies of the 20 bundled images: ``gradleak.data.public.load_tiled``), and runs on that one update
spear (no hand-over, so its own share is measured), Inverting Gradients and DLG. Reconstructions are
matched to the images by optimal assignment; it prints the share ≥ 30 dB, the share ≥ 60 dB
(exact), the median PSNR and the seconds of each, and draws the share ≥ 30 dB against batch size.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from gradleak.attacks import DLG, InvertingGradients  # noqa: E402
from gradleak.attacks.spear import Spear  # noqa: E402
from gradleak.data.public import load_tiled  # noqa: E402
from gradleak.defenses import parse_defenses  # noqa: E402
from gradleak.metrics import score_batch  # noqa: E402
from gradleak.models import build_model  # noqa: E402
from gradleak.scenarios import FedAvg, FedSGD  # noqa: E402


def share_update(model: torch.nn.Module, scenario: str, images: torch.Tensor, labels: torch.Tensor):  # type: ignore[no-untyped-def]
    if scenario.startswith("fedavg"):
        steps = int(scenario[len("fedavg"):] or 5)
        return FedAvg(local_steps=steps, local_lr=1e-4).share(model, images, labels)
    defenses = [] if scenario == "fedsgd" else parse_defenses([scenario])
    return FedSGD(defenses=defenses, generator=torch.Generator().manual_seed(1)).share(model, images, labels)


def measure(attack, model, update, images, labels) -> dict[str, float]:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = attack.run(model, update, generator=torch.Generator().manual_seed(0))
    seconds = time.perf_counter() - start
    score = score_batch(result.images, images, true_labels=labels, recovered_labels=result.labels)
    values = [s.psnr for s in score.per_image]
    return {
        "recovered": sum(v >= 30 for v in values) / len(values),
        "exact": sum(v >= 60 for v in values) / len(values),
        "median": statistics.median(values),
        "seconds": seconds,
        "note": getattr(result, "stop_reason", "")[:90],
    }


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["cifar10", "cifar100"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4, 8, 16, 25, 32, 64, 128])
    parser.add_argument("--scenarios", nargs="+", default=["fedsgd"],
                        help="fedsgd, a defense spec (gaussian:1e-4, dpsgd:clip=1,sigma=0.01, prune:0.3) or fedavg5")
    parser.add_argument("--attacks", nargs="+", default=["spear", "ig", "dlg"], choices=["spear", "spear+ig", "ig", "dlg"],
                        help="spear+ig: spear handing the samples it misses to Inverting Gradients (as auto does)")
    parser.add_argument("--ig-iters", type=int, default=200)
    parser.add_argument("--dlg-iters", type=int, default=30)
    parser.add_argument("--baselines-up-to", type=int, default=128, help="run IG and DLG only up to this batch")
    parser.add_argument("--time-limit", type=float, default=300.0, help="spear's search, seconds at most")
    parser.add_argument("--figure", default=None, help="PNG of the share >= 30 dB against batch size")
    parser.add_argument("--ci", action="store_true", help="CI size: cifar10, fedsgd, batch 4, short baselines")
    parser.add_argument("--redraw", nargs="+", default=None, metavar="TABLE",
                        help="draw --figure from tables this script printed earlier (several runs in one figure); runs nothing")
    args = parser.parse_args(argv)
    if args.redraw:
        rows = [row for path in args.redraw for row in read_table(Path(path).read_text())]
        draw(rows, args.figure or "exact_batch.png")
        return rows
    if args.ci:
        args.datasets, args.batches, args.scenarios, args.ig_iters, args.dlg_iters = ["cifar10"], [4], ["fedsgd"], 5, 1
    torch.set_num_threads(1)
    rows: list[dict[str, object]] = []
    print("| dataset | scenario | batch | attack | ≥30 dB | ≥60 dB (exact) | median PSNR | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for dataset in args.datasets:
        classes = 100 if dataset == "cifar100" else 10
        for scenario in args.scenarios:
            for batch in args.batches:
                torch.manual_seed(0)
                model = build_model("mlp", channels=3, image_size=32, num_classes=classes)
                images, labels = load_tiled(dataset, list(range(batch)))
                update = share_update(model, scenario, images, labels)
                attacks = [("spear", Spear(fallback=False, time_limit=args.time_limit)),
                           ("spear+ig", Spear(time_limit=args.time_limit, iterations=args.ig_iters, restarts=1))]
                if batch <= args.baselines_up_to:
                    attacks += [
                        ("ig", InvertingGradients(iterations=args.ig_iters, restarts=1)),
                        ("dlg", DLG(iterations=args.dlg_iters, restarts=1)),
                    ]
                for name, attack in attacks:
                    if name not in args.attacks or (name == "dlg" and update.kind != "gradient"):
                        continue  # DLG matches gradients only
                    row = {"dataset": dataset, "scenario": scenario, "batch": batch, "attack": name,
                           **measure(attack, model, update, images, labels)}
                    rows.append(row)
                    print(f"| {dataset} | {scenario} | {batch} | {name} | {row['recovered']:.0%} | {row['exact']:.0%} | "
                          f"{row['median']:.1f} | {row['seconds']:.1f} |", flush=True)
    if args.figure:
        draw(rows, args.figure)
    return rows


def read_table(text: str) -> list[dict[str, object]]:
    """The rows of a table printed by :func:`main` (header and separator lines skipped).

    Example:
        >>> read_table("| cifar10 | fedsgd | 64 | spear | 100% | 98% | 134.2 | 21.0 |")[0]["recovered"]
        1.0
    """
    rows: list[dict[str, object]] = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 8 or not cells[2].isdigit():
            continue
        rows.append({"dataset": cells[0], "scenario": cells[1], "batch": int(cells[2]), "attack": cells[3],
                     "recovered": float(cells[4].rstrip("%")) / 100, "exact": float(cells[5].rstrip("%")) / 100,
                     "median": float(cells[6]), "seconds": float(cells[7])})
    return rows


def draw(rows: list[dict[str, object]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    series = sorted({(str(r["dataset"]), str(r["scenario"]), str(r["attack"])) for r in rows})
    for index, (dataset, scenario, attack) in enumerate(series):
        points = sorted((int(r["batch"]), float(r["recovered"])) for r in rows  # type: ignore[arg-type]
                        if (r["dataset"], r["scenario"], r["attack"]) == (dataset, scenario, attack))
        # Baselines ran at a few batch sizes only: markers, no line implying values in between.
        style = {"spear": "-o", "spear+ig": "-.D", "ig": "s", "dlg": "^"}.get(attack, "o")
        # Series often coincide (100% on both datasets, 0% for both baselines): each later one is
        # drawn smaller, so the earlier ones still show around it.
        size = max(4, 12 - 2 * index)
        ax.plot([p[0] for p in points], [100 * p[1] for p in points], style, markersize=size,
                linewidth=max(1.0, 4.0 - index), label=f"{attack} ({dataset}, {scenario})")
    ax.set_xscale("log", base=2)
    batches = sorted({int(r["batch"]) for r in rows})  # type: ignore[arg-type]
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.minorticks_off()
    ax.set_xlabel("batch size (images per shared update); baselines: markers where run")
    ax.set_ylabel("images recovered ≥ 30 dB (%)")
    ax.set_ylim(-3, 103)
    ax.set_title("MLP (width 1,000): share of the batch recovered", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
