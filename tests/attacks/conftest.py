from __future__ import annotations

import pytest
import torch

from gradleak.data import load_samples
from gradleak.models import build_model


@pytest.fixture
def bundled():
    """(images, labels) of bundled real test images, served offline."""

    def load(dataset: str, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return load_samples(dataset, indices, split="test", download=False, root="/nonexistent-gradleak-root")

    return load


@pytest.fixture
def lenet():
    def build(dataset: str) -> torch.nn.Module:
        torch.manual_seed(1234)
        if dataset.startswith("cifar"):
            return build_model("lenet", channels=3, image_size=32, num_classes=100 if dataset == "cifar100" else 10)
        return build_model("lenetmnist", channels=1, image_size=28, num_classes=10)

    return build
