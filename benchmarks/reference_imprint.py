"""A reference implementation of the original imprint attack, as in breaching / Robbing the Fed.

Written from the published description (Fowl et al., ICLR 2022, and the breaching framework's
``ImprintBlock`` with ``linfunc="randn"`` and ``connection="linear"``): the server assumes the
*normalised* statistic is standard normal and puts its ``N`` thresholds at the quantiles
``i/N`` of N(0, 1) (the first at −10); the block's output is ``Linear(N → D)`` with all weights
``1/gain`` (every pixel of the model's input the same number: the model behind it no longer sees
the image). Recovery: cumulative differences of the weight and bias gradient rows, keeping the
``B`` bins with the largest bias-gradient difference. Benchmarks only; not part of the package.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import torch
from torch import nn

# CIFAR-100 channel statistics, as breaching normalises its data.
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


class ReferenceImprint(nn.Module):
    def __init__(self, input_shape: tuple[int, int, int], bins: int, model: nn.Module, *, gain: float = 1e-3,
                 seed: int = 0) -> None:
        super().__init__()
        self.input_shape = input_shape
        features = math.prod(input_shape)
        self.linear0 = nn.Linear(features, bins)
        self.linear2 = nn.Linear(bins, features)
        thresholds = [-10.0] + [NormalDist().inv_cdf(i / bins) for i in range(1, bins)]
        generator = torch.Generator().manual_seed(seed)
        w = torch.randn(features, generator=generator)
        std, mu = torch.std_mean(w)
        w = (w - mu) / std / math.sqrt(features)
        with torch.no_grad():
            self.linear0.weight.copy_(w.repeat(bins, 1) * gain)
            self.linear0.bias.copy_(-torch.tensor(thresholds) * gain)
            self.linear2.weight.fill_(1.0 / gain)
            self.linear2.bias.fill_(-float(torch.tensor(thresholds).mean()))
        self.register_buffer("mean", torch.tensor(CIFAR100_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(CIFAR100_STD).view(1, 3, 1, 1))
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = ((x - self.mean) / self.std).flatten(1)
        out = self.linear2(torch.relu(self.linear0(z)))
        return self.model(out.view(x.shape))


def reference_recover(net: ReferenceImprint, grads: tuple[torch.Tensor, ...], batch_size: int) -> torch.Tensor:
    """(B, C, H, W) images in [0, 1] from the shared gradient of ``net``."""
    params = list(net.parameters())
    position = {id(p): i for i, p in enumerate(params)}
    weight = grads[position[id(net.linear0.weight)]].clone().double()
    bias = grads[position[id(net.linear0.bias)]].clone().double()
    for i in range(weight.shape[0] - 1):  # cumulative structure: bin i minus bin i+1
        weight[i] -= weight[i + 1]
        bias[i] -= bias[i + 1]
    keep = torch.topk(bias.abs(), batch_size).indices
    images = (weight[keep] / bias[keep, None]).nan_to_num(0.0).float().view(batch_size, *net.input_shape)
    return (images * net.std + net.mean).clamp(0, 1)
