"""Benchmark: gradleak on five architectures it does not ship, ``auto`` against DLG and Inverting Gradients.

    python benchmarks/own_models.py --images 3 --iters 200          # what RESULTS.md reports
    python benchmarks/own_models.py --images 1 --iters 5 --dlg-iters 2 --batches 1   # a smoke run

Models (defined here, random initialisation, seed 1234 + model number): a ReLU ConvNet with
BatchNorm in train mode (3 conv layers, 32/64/64 channels), a CIFAR ResNet-20-style net (BatchNorm,
train mode), an MLP 3072-512-256-10 (ReLU), a VGG-style net with GroupNorm, and a small
patch-embedding transformer (4x4 patches, width 128, 2 GELU encoder blocks, LayerNorm). Images:
bundled CIFAR-10 test images from ``--offset``: batch 1 each of ``--images`` images alone, batch 4
the ``--groups`` consecutive groups of 4. Every attack gets the same FedSGD update and the same seed:
``dlg`` (the original L-BFGS with its stall guard, ``--dlg-iters``), ``ig`` (Inverting Gradients,
``--iters``, ``--restarts``) and ``auto`` (same budget as ``ig``, plus ``--layerwise-iters`` for its
layer-wise solve where that applies: one image through a chain of layers, e.g. the ConvNet-BN). PSNR/SSIM after matching
reconstructions to images; seconds are the attack's own wall time.

Resumable: each finished (model, batch, images, attack) row is appended to ``OUT/rows.jsonl`` and
skipped on a rerun; the table (``OUT/table.md``) and the picture (``OUT/own_models.png``) are
rebuilt from all rows at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from gradleak.attacks import DLG, Auto, InvertingGradients  # noqa: E402
from gradleak.data import load_samples  # noqa: E402
from gradleak.metrics import score_batch  # noqa: E402
from gradleak.scenarios import FedSGD  # noqa: E402

ATTACK_NAMES = ("dlg", "ig", "auto")


class ConvNetBN(nn.Module):
    """3 conv layers (32/64/64 channels, 3x3), BatchNorm, ReLU, 2x2 max pooling after the last two."""

    def __init__(self, num_classes: int = 10, input_shape: tuple[int, int, int] = (3, 32, 32)) -> None:
        super().__init__()
        channels, height, width = input_shape
        self.features = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Linear(64 * (height // 4) * (width // 4), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def convnet_bn(num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """The ConvNet-BN for ``gradleak run --model benchmarks/own_models.py:convnet_bn`` (train mode)."""
    return ConvNetBN(num_classes, input_shape).train()


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet20(nn.Module):
    """CIFAR ResNet-20 (He et al. 2016): 3 stages of 3 basic blocks, 16/32/64 channels, global pooling."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        blocks: list[nn.Module] = []
        cin = 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(3):
                blocks.append(BasicBlock(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))


def mlp(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(3072, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, num_classes)
    )


def vgg_groupnorm(num_classes: int = 10) -> nn.Module:
    """VGG-style: 3x3 conv pairs with GroupNorm(8) and ReLU, max pooling between stages, Linear head."""
    layers: list[nn.Module] = []
    cin = 3
    for stage in ((32, 32), (64, 64), (128,)):
        for cout in stage:
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.ReLU()]
            cin = cout
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(128 * 4 * 4, num_classes))


class PatchTransformer(nn.Module):
    """A small ViT: 4x4 patches (64 tokens), width 128, learned position embedding, 2 GELU encoder
    blocks (4 heads, pre-LayerNorm), mean pooling, LayerNorm, Linear head."""

    def __init__(self, num_classes: int = 10, width: int = 128) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, width, 4, stride=4)
        self.position = nn.Parameter(torch.randn(1, 64, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, 4, 2 * width, dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch(x).flatten(2).transpose(1, 2) + self.position
        return self.head(self.norm(self.encoder(tokens).mean(dim=1)))


MODELS: dict[str, Callable[[], nn.Module]] = {
    "convnet-bn": ConvNetBN,
    "resnet20": ResNet20,
    "mlp": mlp,
    "vgg-gn": vgg_groupnorm,
    "vit": PatchTransformer,
}


def build(name: str) -> nn.Module:
    torch.manual_seed(1234 + list(MODELS).index(name))
    return MODELS[name]().train()


def attack(name: str, args: argparse.Namespace) -> object:
    if name == "dlg":
        return DLG(iterations=args.dlg_iters)
    if name == "ig":
        return InvertingGradients(iterations=args.iters, restarts=args.restarts)
    return Auto(iterations=args.iters, restarts=args.restarts, layerwise_iterations=args.layerwise_iters)


def cases(args: argparse.Namespace) -> list[tuple[str, int, list[int]]]:
    found = []
    for model in args.models:
        for batch in args.batches:
            count = args.images if batch == 1 else args.groups
            for k in range(count):
                first = args.offset + k * batch
                found.append((model, batch, list(range(first, first + batch))))
    return found


def run_case(
    model_name: str, indices: list[int], args: argparse.Namespace, out: Path, *, skip: frozenset[str] = frozenset()
) -> list[dict]:
    """Attack one case with every attack in ``args.attacks`` but those in ``skip`` (already done);
    each row is appended to ``out/rows.jsonl`` as soon as it is measured (a killed run loses one attack)."""
    images, labels = load_samples("cifar10", indices, split="test")
    model = build(model_name)
    update = FedSGD().share(model, images, labels)
    rows = []
    for attack_name in (a for a in args.attacks if a not in skip):
        result = attack(attack_name, args).run(model, update, generator=torch.Generator().manual_seed(args.seed))
        score = score_batch(result.images, images, true_labels=labels, recovered_labels=result.labels, indices=indices)
        matched = result.images[score.order]
        key = f"{model_name}-b{len(indices)}-{indices[0]}-{attack_name}"
        torch.save(matched.clone(), out / f"{key}.pt")
        row = {
            "model": model_name, "batch": len(indices), "indices": indices, "attack": attack_name,
            "psnr": [s.psnr for s in score.per_image], "ssim": [s.ssim for s in score.per_image],
            "label_accuracy": score.label_accuracy, "seconds": result.seconds, "stop_reason": result.stop_reason,
            "auto_choice": result.extras.get("auto_choice"),
            "relative_gradient_error": result.extras.get("relative_gradient_error"),
        }
        with (out / "rows.jsonl").open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        rows.append(row)
        print(f"{key}: PSNR {statistics.median(rows[-1]['psnr']):.1f} dB, {result.seconds:.1f} s "
              f"({result.stop_reason[:100]})", flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| model | batch | attack | images | median PSNR (dB) | min–max PSNR | median SSIM | ≥30 dB | median s |",
             "|---|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["batch"], row["attack"]), []).append(row)
    order = {name: i for i, name in enumerate(MODELS)}
    for (model, batch, attack_name), found in sorted(groups.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0][1], ATTACK_NAMES.index(kv[0][2]))):
        psnrs = [p for r in found for p in r["psnr"]]
        ssims = [s for r in found for s in r["ssim"]]
        images = sorted(i for r in found for i in r["indices"])
        lines.append(
            f"| {model} | {batch} | {attack_name} | {','.join(map(str, images))} | {statistics.median(psnrs):.1f} | "
            f"{min(psnrs):.1f}–{max(psnrs):.1f} | {statistics.median(ssims):.3f} | "
            f"{sum(p >= 30 for p in psnrs)}/{len(psnrs)} | {statistics.median(r['seconds'] for r in found):.1f} |"
        )
    return "\n".join(lines)


def picture(rows: list[dict], out: Path) -> Path | None:
    """One row per model (its first batch-1 image): the original, then each attack's reconstruction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # per model its first batch-1 image and, where another one did worse under ``auto``, that one too
    firsts: dict[str, int] = {}
    for row in rows:
        if row["batch"] == 1:
            firsts.setdefault(row["model"], row["indices"][0])
    shown: list[tuple[str, int]] = []
    for model, first in firsts.items():
        shown.append((model, first))
        autos = [x for x in rows if x["model"] == model and x["batch"] == 1 and x["attack"] == "auto"]
        worst = min(autos, key=lambda x: x["psnr"][0], default=None)
        if worst is not None and worst["indices"][0] != first:
            shown.append((model, worst["indices"][0]))
    if not shown:
        return None
    fig, axes = plt.subplots(len(shown), 1 + len(ATTACK_NAMES), figsize=(2.0 * (1 + len(ATTACK_NAMES)), 2.1 * len(shown)),
                             squeeze=False)
    for r, (model, index) in enumerate(shown):
        original, _ = load_samples("cifar10", [index], split="test")
        panels = [("original", original[0])]
        for attack_name in ATTACK_NAMES:
            path = out / f"{model}-b1-{index}-{attack_name}.pt"
            match = [x for x in rows if x["model"] == model and x["batch"] == 1 and x["indices"] == [index] and x["attack"] == attack_name]
            if path.exists() and match:
                value = match[0]["psnr"][0]
                title = f"{attack_name}: exact" if value == float("inf") else f"{attack_name} {value:.1f} dB"
                panels.append((title, torch.load(path, weights_only=True)[0]))
            else:
                panels.append((f"{attack_name}: not run", None))
        for c, (title, image) in enumerate(panels):
            ax = axes[r][c]
            if image is not None:
                ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())
            ax.set_title(title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(f"{model}\nCIFAR-10 #{index}", fontsize=8)
    fig.suptitle("Reconstructions from one image's FedSGD gradient (PSNR vs the original; exact: MSE 0)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))  # room for the title above the first row
    path = out / "own_models.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=3, help="batch-1 images (from --offset)")
    parser.add_argument("--groups", type=int, default=1, help="batch-4 groups (consecutive images from --offset)")
    parser.add_argument("--offset", type=int, default=1, help="first CIFAR-10 test index (0 was used while developing)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--attacks", nargs="+", default=list(ATTACK_NAMES), choices=list(ATTACK_NAMES))
    parser.add_argument("--iters", type=int, default=200, help="Inverting Gradients' (and auto's) iterations")
    parser.add_argument("--restarts", type=int, default=2)
    parser.add_argument("--dlg-iters", type=int, default=50)
    parser.add_argument("--layerwise-iters", type=int, default=1200,
                        help="auto's layer-wise solve (chains with a Linear head, one image; before its --iters of IG)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/own_models"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "rows.jsonl"
    done = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
    finished = {(r["model"], r["batch"], r["indices"][0], r["attack"]) for r in done}
    for model_name, batch, indices in cases(args):
        if all((model_name, batch, indices[0], a) in finished for a in args.attacks):
            continue
        start = time.perf_counter()
        skip = frozenset(a for a in args.attacks if (model_name, batch, indices[0], a) in finished)
        done += run_case(model_name, indices, args, args.out, skip=skip)
        print(f"  ({model_name}, batch {batch}, images {indices}: {time.perf_counter() - start:.0f} s)", flush=True)
    text = table(done)
    (args.out / "table.md").write_text(text + "\n")
    print(text)
    path = picture(done, args.out)
    if path is not None:
        print(f"picture: {path}")
    return done


if __name__ == "__main__":
    main()
