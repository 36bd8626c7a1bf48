"""Your own CNN: what does one shared gradient of it leak about a private CIFAR-10 image?

    python examples/own_cnn.py            # bundled CIFAR-10 test image 0, offline
    python examples/own_cnn.py --index 5 --iterations 2000

The model is plain PyTorch; gradleak sees it only through the update a client would send.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import gradleak
from gradleak.data import load_samples


class SmallCNN(nn.Module):
    """Two ReLU convolutions with BatchNorm, then a linear classifier: a common research model."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        )
        self.classifier = nn.Linear(32 * 16 * 16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=int, default=0, help="bundled CIFAR-10 test image (0..19)")
    parser.add_argument("--iterations", type=int, default=300, help="attack budget (auto's optimisation steps)")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    model = SmallCNN()
    images, labels = load_samples("cifar10", [args.index], split="test")

    # The client: one FedSGD step in train mode (BatchNorm uses the batch's statistics).
    update = gradleak.client_update(model, images, labels, training=True)
    # The server: only the model and the update.
    result = gradleak.reconstruct(model, update, attack="auto", iterations=args.iterations)
    score = gradleak.score(result, images, labels)
    print(f"PSNR {score.psnr:.1f} dB, SSIM {score.ssim:.3f}, label {'recovered' if score.label_accuracy == 1 else 'missed'}"
          f" | {result.stop_reason}")
    return score.psnr


if __name__ == "__main__":
    main()
