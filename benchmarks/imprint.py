"""Benchmark: the malicious server's imprint attack against batch size and bins, beside the honest server.

    python benchmarks/imprint.py            # the full table (a few minutes on one thread)
    python benchmarks/imprint.py --quick    # fewer batches (a smoke run, under a minute)

Data: the 20 bundled CIFAR-100 test images (foolbox's copies of the first 20 test images, see
src/gradleak/data/samples/ATTRIBUTION.md) tiled into larger batches with mirror images and
shifted crops (gradleak.data.public.load_tiled, as ``--tile-bundled``); batch B at offset o uses
tiled indices o … o+B−1. The server calibrates its bins on *other* public images (the bundled
CIFAR-10 test images and their mirrors), never on the batch.

Rows: for each model, batch size and bin count, over several batches: the share of images
reconstructed at >= 30 dB after optimal matching, the median PSNR, and seconds per batch (the
server building its model, the client's gradient, the attack). Beside it, in the same run:

* the reference implementation of the original imprint attack (benchmarks/reference_imprint.py:
  breaching-style bins at standard-normal quantiles of the normalised statistic, constant
  read-out), same images, same bins: its share and the ratio of times;
* the honest server: ``auto`` on the plain LeNet (analytic batch inversion, ~10-25 s per batch
  of 8), for batches of at most 8 only, because it takes minutes beyond that and does not reach
  30 dB for most images of a batch anyway (benchmarks/RESULTS.md, "Batches").
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

from reference_imprint import ReferenceImprint, reference_recover  # noqa: E402

from gradleak.attacks import Auto, ImprintAttack  # noqa: E402
from gradleak.data.public import load_tiled, public_images  # noqa: E402
from gradleak.metrics import match_reconstructions, psnr  # noqa: E402
from gradleak.models import build_model  # noqa: E402
from gradleak.scenarios import FedSGD, Imprint  # noqa: E402
from gradleak.scenarios import cross_entropy_for_soft_labels, one_hot  # noqa: E402

SEED = 1234
THRESHOLD = 30.0
SHAPE = (3, 32, 32)


def matched_psnrs(recon: torch.Tensor, targets: torch.Tensor) -> list[float]:
    order = match_reconstructions(recon, targets) if targets.shape[0] > 1 else [0]
    return [min(psnr(recon[order[i]], targets[i]), 200.0) for i in range(targets.shape[0])]


def gradleak_case(model_name: str, images: torch.Tensor, labels: torch.Tensor, bins: int, seed: int) -> tuple[list[float], float]:
    start = time.perf_counter()
    torch.manual_seed(seed)
    model = build_model(model_name, channels=3, image_size=32, num_classes=100)
    scenario = Imprint(bins=bins, seed=seed, public_images=public_images("cifar100", SHAPE))
    server_model = scenario.server_model(model)
    update = scenario.share(server_model, images, labels)
    result = ImprintAttack().run(server_model, update)
    return matched_psnrs(result.images, images), time.perf_counter() - start


def reference_case(model_name: str, images: torch.Tensor, labels: torch.Tensor, bins: int, seed: int) -> tuple[list[float], float]:
    start = time.perf_counter()
    torch.manual_seed(seed)
    model = build_model(model_name, channels=3, image_size=32, num_classes=100)
    net = ReferenceImprint(SHAPE, bins, model, seed=seed)
    loss = cross_entropy_for_soft_labels(net(images), one_hot(labels, 100))
    grads = tuple(g.detach() for g in torch.autograd.grad(loss, list(net.parameters())))
    recon = reference_recover(net, grads, images.shape[0])
    return matched_psnrs(recon, images), time.perf_counter() - start


def honest_case(images: torch.Tensor, labels: torch.Tensor, seed: int) -> tuple[list[float], float]:
    torch.manual_seed(seed)
    model = build_model("lenet", channels=3, image_size=32, num_classes=100)
    update = FedSGD().share(model, images, labels)
    start = time.perf_counter()
    result = Auto(iterations=300).run(model, update)
    return matched_psnrs(result.images, images), time.perf_counter() - start


def summary(values: list[float]) -> tuple[float, float]:
    return sum(v >= THRESHOLD for v in values) / len(values), statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer batches and settings")
    args = parser.parse_args()
    torch.set_num_threads(1)
    offsets = [0, 256] if args.quick else [0, 256, 512, 768]
    grid = [(1, 256), (8, 256), (8, 1024), (64, 256), (64, 1024), (256, 1024)]
    if not args.quick:
        grid = [(1, 256), (8, 64), (8, 256), (8, 1024), (16, 1024), (32, 1024), (64, 64), (64, 256), (64, 1024),
                (64, 4096), (128, 1024), (128, 4096), (256, 1024), (256, 4096)]
    models = ["lenet"] if args.quick else ["lenet", "resnet18"]
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, 1 thread; "
          f"batches at tiled offsets {offsets}; success = PSNR >= {THRESHOLD:g} dB after optimal matching")
    print()
    warm, warm_labels = load_tiled("cifar100", [0])
    gradleak_case("lenet", warm, warm_labels, 64, SEED)  # warm-up: first-call costs out of the table
    print("| model | batch | bins | gradleak imprint: share >= 30 dB | median PSNR | s / batch | "
          "reference imprint: share | s / batch | time ratio (ref / ours) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for model_name in models:
        for batch, bins in grid:
            if model_name == "resnet18" and batch not in (8, 64):
                continue
            ours, ref, t_ours, t_ref = [], [], [], []
            for offset in offsets:
                images, labels = load_tiled("cifar100", list(range(offset, offset + batch)))
                values, seconds = gradleak_case(model_name, images, labels, bins, SEED + offset)
                ours += values
                t_ours.append(seconds)
                values, seconds = reference_case(model_name, images, labels, bins, SEED + offset)
                ref += values
                t_ref.append(seconds)
            share, median = summary(ours)
            ref_share, _ = summary(ref)
            print(f"| `{model_name}` | {batch} | {bins} | **{share:.0%}** ({sum(v >= THRESHOLD for v in ours)}/{len(ours)}) | "
                  f"{median:.1f} | {statistics.median(t_ours):.2f} | {ref_share:.0%} | {statistics.median(t_ref):.2f} | "
                  f"{statistics.median(t_ref) / statistics.median(t_ours):.2f} |", flush=True)
    print()
    print("Honest server (`auto` on the plain LeNet, no imprint block), same batches, batch <= 8 only:")
    print()
    print("| batch | share >= 30 dB | median PSNR | s / batch |")
    print("|---|---|---|---|")
    for batch in (1, 8):
        values, times = [], []
        for offset in offsets[:2] if batch == 8 else offsets:
            images, labels = load_tiled("cifar100", list(range(offset, offset + batch)))
            v, seconds = honest_case(images, labels, SEED + offset)
            values += v
            times.append(seconds)
        share, median = summary(values)
        print(f"| {batch} | {share:.0%} ({sum(v >= THRESHOLD for v in values)}/{len(values)}) | {median:.1f} | "
              f"{statistics.median(times):.1f} |", flush=True)


if __name__ == "__main__":
    main()
