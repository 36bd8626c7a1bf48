"""One training loop (gradleak.train_loop) behind `gradleak train` and the utility of a defense:
the same minibatches for the same seed, and a diverging run is one line naming the way out."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradleak.errors import GradleakError
from gradleak.train_loop import train_epochs
from gradleak.training import TrainConfig, train_model
from gradleak.utility import UtilityConfig, train_under_defense


def test_the_minibatch_order_depends_on_the_seed_alone():
    x, y = torch.rand(30, 1, 2, 2), torch.arange(30) % 3
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))

    def batches(seed: int) -> list[list[int]]:
        seen: list[list[int]] = []
        train_epochs(net, lambda images, labels: seen.append(labels.tolist()) or 0.0, (x, y), (x, y),
                     epochs=2, batch_size=7, seed=seed, device=torch.device("cpu"))
        return seen

    first = batches(5)
    assert len(first) == 2 * 5 and sorted(sum(first[:5], [])) == sorted(y.tolist())  # every image once an epoch
    assert batches(5) == first and batches(6) != first


def test_diverging_training_is_one_line_for_both_callers():
    with pytest.raises(GradleakError, match=r"^training diverged \(non-finite weights\) in epoch 1 with lr 1e\+38: lower --lr$"):
        train_model(TrainConfig(dataset="digits", model="lenetmnist", epochs=1, train_size=64, test_size=16,
                                optimizer="sgd", lr=1e38))
    with pytest.raises(GradleakError, match=r"^training diverged .* in epoch 1 with lr 1e\+38 under no defense: lower lr$"):
        train_under_defense(UtilityConfig(dataset="digits", epochs=1, train_size=64, test_size=16, lr=1e38))
