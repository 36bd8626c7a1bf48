"""A model factory as ``gradleak run --model examples/mlp_model.py:build`` calls it."""

from __future__ import annotations

from torch import nn


def build(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """A 2-layer ReLU MLP for inputs of ``input_shape`` (e.g. (3, 32, 32))."""
    size = 1
    for d in input_shape:
        size *= d
    return nn.Sequential(nn.Flatten(), nn.Linear(size, 256), nn.ReLU(), nn.Linear(256, num_classes))
