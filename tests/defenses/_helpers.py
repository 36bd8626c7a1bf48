"""Shared helpers for the defense tests."""

from __future__ import annotations

import torch

from gradleak.types import SharedUpdate


def make_update(*tensors: torch.Tensor, defenses: tuple[str, ...] = ()) -> SharedUpdate:
    """A gradient SharedUpdate carrying ``tensors``."""
    return SharedUpdate(
        tensors=tuple(tensors),
        kind="gradient",
        batch_size=2,
        input_shape=(3, 32, 32),
        num_classes=10,
        defenses=defenses,
    )


def lenet_like_update(seed: int = 0) -> SharedUpdate:
    """Four tensors shaped like a small conv + linear model's gradient."""
    g = torch.Generator().manual_seed(seed)
    return make_update(
        torch.randn(6, 3, 5, 5, generator=g),
        torch.randn(6, generator=g),
        torch.randn(10, 24, generator=g),
        torch.randn(10, generator=g),
    )
