"""Benchmark: gradient leakage from a freshly initialised model vs the same model after training.

    python benchmarks/trained_models.py              # the full benchmark (about 25-35 minutes, one thread)
    python benchmarks/trained_models.py --quick      # 1 image, few iterations (a smoke run, ~2 minutes)

For each model (``lenet`` 3x32x32, ``lenetmnist`` 1x28x28, ``resnet18`` 3x32x32) a checkpoint is
trained with ``gradleak.training`` on scikit-learn's bundled digits (offline; upsampled to the
model's input, 10 classes) and every attack is run twice through the CLI's own path
(``RunConfig`` → ``prepare`` → attack → score): once on the model at initialisation (seed 1234,
as ``gradleak run``) and once with ``--weights`` set to the checkpoint.

Images: real bundled test images with 10 classes so that the 10-class checkpoint covers their
labels: CIFAR-10 (``lenet``, ``resnet18``) and MNIST (``lenetmnist``), indices 0.. .

Attacks: ``auto`` (gradleak's default), ``ig`` (Inverting Gradients) and ``dlg`` (the original
DLG as published: L-BFGS on dummy image and label, squared-L2 gradient distance; the reference the
ratio column compares against). ResNet-18 costs ~0.3 s per IG step on one CPU thread, so it gets one
image, one restart and a modest budget (the table says so); its numbers are a lower bound.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from gradleak.experiment import RunConfig, prepare  # noqa: E402
from gradleak.metrics import score_batch  # noqa: E402
from gradleak.models.checkpoint import save_checkpoint  # noqa: E402
from gradleak.training import TrainConfig, train_model  # noqa: E402

THRESHOLD = 30.0


@dataclass
class Case:
    model: str
    dataset: str  # bundled test images to attack
    indices: list[int]
    epochs: int
    budgets: dict[str, dict[str, int]]  # attack -> RunConfig overrides (iterations, restarts)


def cases(quick: bool) -> list[Case]:
    if quick:
        small = {"auto": {"iterations": 50}, "ig": {"iterations": 50}, "dlg": {"iterations": 10}}
        tiny = {"auto": {"iterations": 5, "restarts": 1}, "ig": {"iterations": 5, "restarts": 1}, "dlg": {"iterations": 1}}
        return [Case("lenet", "cifar10", [0], 3, small), Case("lenetmnist", "mnist", [0], 3, small),
                Case("resnet18", "cifar10", [0], 1, tiny)]
    lenet = {"auto": {"iterations": 1000}, "ig": {"iterations": 1000}, "dlg": {"iterations": 300}}
    resnet = {"auto": {"iterations": 200, "restarts": 1}, "ig": {"iterations": 200, "restarts": 1},
              "dlg": {"iterations": 10}}
    return [
        Case("lenet", "cifar10", [0, 1, 2, 3], 20, lenet),
        Case("lenetmnist", "mnist", [0, 1, 2, 3], 20, lenet),
        Case("resnet18", "cifar10", [0], 3, resnet),
    ]


def attack_once(case: Case, attack: str, index: int, weights: str | None, scratch: Path) -> dict[str, object]:
    budget = case.budgets[attack]
    config = RunConfig(
        dataset=case.dataset, indices=[index], split="test", download=False, data_root=str(scratch / "no-data"),
        model=case.model, weights=weights, attack=attack, iterations=budget["iterations"],
        restarts=budget.get("restarts"), threads=1, device="cpu", quiet=True, out=str(scratch / "unused"),
    )
    prepared = prepare(config)
    start = time.perf_counter()
    result = prepared.attack.run(prepared.model, prepared.update)
    seconds = time.perf_counter() - start
    score = score_batch(result.images, prepared.images, true_labels=prepared.labels, recovered_labels=result.labels)
    return {
        "psnr": score.psnr, "ssim": score.ssim, "label_ok": score.label_accuracy == 1.0, "seconds": seconds,
        "iterations": result.iterations, "stop": result.stop_reason.split(" (")[0],
        "image": result.images[score.order][0].detach().clamp(0, 1), "target": prepared.images[0],
    }


def fmt_db(value: float) -> str:
    return "inf" if value == float("inf") else f"{value:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one image per model, few iterations")
    parser.add_argument("--models", default="lenet,lenetmnist,resnet18", help="comma-separated subset")
    parser.add_argument("--figure", default=None, help="write a picture (targets and reconstructions) here")
    parser.add_argument("--json", default=None, help="write every measurement here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    wanted = set(args.models.split(","))
    print(f"# trained_models — {time.strftime('%Y-%m-%d %H:%M')}, torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}, 1 thread{' (quick)' if args.quick else ''}", flush=True)
    rows: list[dict[str, object]] = []
    pictures: list[tuple[str, list[torch.Tensor], list[str]]] = []
    with tempfile.TemporaryDirectory(prefix="gradleak-trained-") as tmp:
        scratch = Path(tmp)
        for case in cases(args.quick):
            if case.model not in wanted:
                continue
            trained = train_model(TrainConfig(dataset="digits", model=case.model, epochs=case.epochs, seed=0))
            ckpt = scratch / f"{case.model}.safetensors"
            save_checkpoint(ckpt, trained.model, trained.metadata)
            print(f"trained {case.model} on digits ({trained.metadata['channels']}x{trained.metadata['image_size']}²), "
                  f"{case.epochs} epochs, {trained.seconds:.0f} s: test accuracy {trained.accuracy:.1%}", flush=True)
            for state, weights, accuracy in (("init", None, None), ("trained", str(ckpt), trained.accuracy)):
                images: list[torch.Tensor] = []
                captions: list[str] = []
                for attack in ("auto", "ig", "dlg"):
                    results = []
                    for index in case.indices:
                        r = attack_once(case, attack, index, weights, scratch)
                        results.append(r)
                        print(f"  {case.model:<10} {state:<7} {attack:<4} #{index}: {fmt_db(r['psnr'])} dB, "
                              f"SSIM {r['ssim']:.3f}, {r['seconds']:.1f} s, {r['iterations']} it ({r['stop']})", flush=True)
                    if not images:
                        images.append(results[0]["target"])  # type: ignore[arg-type]
                        captions.append(f"{case.dataset} #{case.indices[0]}")
                    images.append(results[0]["image"])  # type: ignore[arg-type]
                    captions.append(f"{attack} {fmt_db(results[0]['psnr'])} dB")  # type: ignore[arg-type]
                    psnrs = [float(r["psnr"]) for r in results]  # type: ignore[arg-type]
                    rows.append({
                        "model": case.model, "images": f"{case.dataset} {','.join(map(str, case.indices))}",
                        "weights": state, "accuracy": accuracy, "attack": attack,
                        "budget": case.budgets[attack], "psnr": psnrs,
                        "ssim": [float(r["ssim"]) for r in results],  # type: ignore[arg-type]
                        "seconds": [float(r["seconds"]) for r in results],  # type: ignore[arg-type]
                        "labels_ok": sum(bool(r["label_ok"]) for r in results), "count": len(results),
                    })
                pictures.append((f"{case.model}, {state}" + (f" ({accuracy:.0%} acc.)" if accuracy is not None else ""),
                                 images, captions))

    print("\n| model | images | weights | test acc. | attack | budget | PSNR median (min–max) | ≥30 dB | SSIM median | labels | s median | s vs dlg |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    dlg_seconds = {(r["model"], r["weights"]): statistics.median(r["seconds"]) for r in rows if r["attack"] == "dlg"}  # type: ignore[arg-type]
    for r in rows:
        psnrs, seconds = r["psnr"], statistics.median(r["seconds"])  # type: ignore[arg-type]
        budget = r["budget"]
        budget_text = f"{budget['iterations']} it" + (f", {budget['restarts']} restart" if "restarts" in budget else "")  # type: ignore[index, operator]
        ratio = seconds / dlg_seconds[(r["model"], r["weights"])] if (r["model"], r["weights"]) in dlg_seconds else float("nan")
        acc = "—" if r["accuracy"] is None else f"{r['accuracy']:.1%}"
        print(f"| {r['model']} | {r['images']} | {r['weights']} | {acc} | {r['attack']} | {budget_text} | "
              f"{fmt_db(statistics.median(psnrs))} ({fmt_db(min(psnrs))}–{fmt_db(max(psnrs))}) | "  # type: ignore[arg-type]
              f"{sum(p >= THRESHOLD for p in psnrs)}/{r['count']} | {statistics.median(r['ssim']):.3f} | "  # type: ignore[arg-type, union-attr]
              f"{r['labels_ok']}/{r['count']} | {seconds:.2f} | {ratio:.3g} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=str) + "\n")
    if args.figure:
        save_figure(Path(args.figure), pictures)
        print(f"\nfigure: {args.figure}")


def save_figure(path: Path, pictures: list[tuple[str, list[torch.Tensor], list[str]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = max(len(images) for _, images, _ in pictures)
    fig, axes = plt.subplots(len(pictures), columns, figsize=(1.6 * columns, 1.8 * len(pictures)), squeeze=False)
    for row, (title, images, captions) in enumerate(pictures):
        for col in range(columns):
            ax = axes[row][col]
            ax.axis("off")
            if col < len(images):
                image = images[col].detach().cpu()
                ax.imshow(image[0] if image.shape[0] == 1 else image.permute(1, 2, 0),
                          cmap="gray" if image.shape[0] == 1 else None, vmin=0, vmax=1)
                ax.set_title(captions[col], fontsize=7)
        axes[row][0].text(-0.1, 0.5, title, transform=axes[row][0].transAxes, ha="right", va="center", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    main()
