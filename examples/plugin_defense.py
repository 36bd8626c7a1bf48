"""A defense registered from outside gradleak: sign compression (signSGD-style).

The client sends only the sign of each gradient entry, scaled to keep the tensor's mean magnitude.
Register it, then use it like a built-in one:

    python examples/plugin_defense.py
    gradleak run --plugin examples/plugin_defense.py --defense signs --dataset cifar10 --split test --index 0
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

import gradleak
from gradleak.defenses.base import SpecError
from gradleak.types import NoiseContribution, SharedUpdate


@dataclass(frozen=True)
class SignCompression:
    """Each tensor becomes sign(g) * mean(|g|)."""

    name: str = "signs"
    family: str = "signs"
    level: float | None = None

    def apply(self, update: SharedUpdate, *, generator: torch.Generator | None = None) -> SharedUpdate:
        signed = tuple(t.sign() * t.abs().mean() for t in update.tensors)
        return update.replace_tensors(signed, self.name)

    def noise_contribution(self, update: SharedUpdate) -> NoiseContribution:
        # The error sign(g)·mean|g| − g has at most the tensor's mean square as variance per entry.
        return NoiseContribution(
            variances=tuple((t**2).mean().reshape(()) for t in update.tensors),
            description="sign compression (variance up to the tensor's mean square)",
        )


def build(arg: str | None) -> SignCompression:
    if arg is not None:
        raise SpecError("signs takes no argument")
    return SignCompression()


if "signs" not in gradleak.available("defense"):  # importing twice must not register twice
    gradleak.register_defense("signs", build, summary="sign compression: sign(g) * mean|g| per tensor")


def main() -> tuple[float, float]:
    from gradleak.data import load_samples

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    images, labels = load_samples("cifar10", [0], split="test")
    exact = gradleak.client_update(model, images, labels)
    signed = gradleak.defend(exact, "signs")
    plain = gradleak.score(gradleak.reconstruct(model, exact, attack="auto"), images, labels).psnr
    defended = gradleak.score(gradleak.reconstruct(model, signed, attack="auto", iterations=100), images, labels).psnr
    print(f"exact gradient: {plain:.1f} dB | with sign compression: {defended:.1f} dB")
    return plain, defended


if __name__ == "__main__":
    main()
