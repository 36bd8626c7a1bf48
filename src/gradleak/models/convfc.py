"""A convolutional net with a fully connected ReLU block after its features.

``Conv2d(3×3, stride 1) → ReLU → flatten → Linear(·, width) → ReLU → Linear(width, classes)``.
The FC block's gradient disaggregates the batch's *features* (:mod:`gradleak.attacks.spear`);
with stride 1 and ``channels_out`` ≥ 6 per input channel, about half of the feature map is active
for an image, more equations than pixels, so the features determine the image (a linear solve on
the active units).

Example:
    >>> import torch
    >>> model = ConvFC(channels=3, image_size=8, num_classes=10, width=32)
    >>> model(torch.rand(2, 3, 8, 8)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import torch
from torch import nn

DEFAULT_CONV_CHANNELS = 12
DEFAULT_FC_WIDTH = 1000


class ConvFC(nn.Module):
    """``features`` (one stride-1 conv + ReLU) then ``classifier`` (Linear → ReLU → Linear)."""

    def __init__(
        self,
        channels: int = 3,
        image_size: int = 32,
        num_classes: int = 10,
        *,
        conv_channels: int = DEFAULT_CONV_CHANNELS,
        width: int = DEFAULT_FC_WIDTH,
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(channels, conv_channels, 3, stride=1, padding=1), nn.ReLU())
        self.classifier = nn.Sequential(
            nn.Linear(conv_channels * image_size * image_size, width), nn.ReLU(), nn.Linear(width, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))
