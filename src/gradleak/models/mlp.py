"""Fully connected ReLU nets: the layer whose gradient disaggregates a whole batch (SPEAR).

A ``Linear → ReLU`` layer's weight gradient is ``Σ_b δ_b x_bᵀ`` with each ``δ_b`` zero wherever
sample b's unit is inactive; :mod:`gradleak.attacks.spear` reads the batch out of it.

Example:
    >>> import torch
    >>> model = MLP(channels=1, image_size=28, num_classes=10, width=64)
    >>> model(torch.rand(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    >>> [type(m).__name__ for m in model.layers][:3]
    ['Linear', 'ReLU', 'Linear']
"""

from __future__ import annotations

import torch
from torch import nn

DEFAULT_WIDTH = 1000  # SPEAR's width: wider layers fail less often (more zeros per sample)
DEFAULT_HIDDEN_LAYERS = 2


class MLP(nn.Module):
    """``flatten → (Linear(·, width) → ReLU) × hidden_layers → Linear(width, classes)``, any input shape."""

    def __init__(
        self,
        channels: int = 3,
        image_size: int = 32,
        num_classes: int = 10,
        *,
        width: int = DEFAULT_WIDTH,
        hidden_layers: int = DEFAULT_HIDDEN_LAYERS,
    ) -> None:
        super().__init__()
        if width < 1 or hidden_layers < 1:
            raise ValueError(f"an MLP needs width >= 1 and hidden_layers >= 1 (got {width}, {hidden_layers})")
        layers: list[nn.Module] = []
        inputs = channels * image_size * image_size
        for _ in range(hidden_layers):
            layers += [nn.Linear(inputs, width), nn.ReLU()]
            inputs = width
        layers.append(nn.Linear(inputs, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.flatten(1))
