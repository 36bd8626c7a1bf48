"""The imprint block a malicious server puts in front of the client's model (Fowl et al. 2022).

"Robbing the Fed" (Fowl, Geiping, Czaja, Goldblum, Goldstein; ICLR 2022) shows that a server that
may change the model it sends can read whole batches out of one shared gradient. The block here
follows the "imprint" module of that paper (and of the breaching framework):

* ``linear0``: ``Linear(D → N)`` on the flattened input, every row the same direction ``γ·w`` (a
  feature statistic ``s(x) = w·x``, times a small gain ``γ``), bias ``−γ·t_i`` with thresholds ``t_0 < t_1 < … < t_{N−1}``
  at quantiles of the statistic's distribution on public data, then ReLU. Unit ``i`` is active
  exactly for the images with ``s(x) > t_i``.
* ``linear1``: ``Linear(N → D)`` whose columns are all the same vector ``c`` (RMS 1 per pixel),
  added to the input (a residual), then reshaped to the input shape. The rest of the client's
  model sees ``x + c·Σ_i h_i`` ≈ ``x`` (the gain makes ``h`` tiny), so it works unchanged, and
  because the columns are equal every unit's output gradient is the same scalar
  ``g_n = c·∂L/∂out_n`` per image, of an ordinary layer's size whatever the gain.

Then ``∂L/∂W_i = (1/B) Σ_{n: s_n > t_i} g_n x_n`` and ``∂L/∂b_i = (1/B) Σ_{n: s_n > t_i} g_n``, so
for consecutive bins ``(∂W_i − ∂W_{i+1}) / (∂b_i − ∂b_{i+1}) = x_n`` exactly when one image has
its statistic between ``t_i`` and ``t_{i+1}`` (:mod:`gradleak.attacks.imprint`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import torch
from torch import nn

from gradleak.errors import GradleakError

#: how far below the public mean (in standard deviations) the first threshold sits: every image
#: activates unit 0, so the lowest bin is closed from below as in breaching (which uses -10).
LOWEST_THRESHOLD_SIGMAS = 10.0
#: RMS per pixel of the residual the block adds to a typical public image (small: the client's
#: model keeps working, and the recovery is exact whatever this scale is).
RESIDUAL_RMS = 1e-3
#: most bins a block may have (64x the default); more separate no batch a run can hold better.
MAX_BINS = 65536
#: bytes per entry of one bins x features weight over a run: both weights and their gradients in
#: float32 (16), the attack's float64 copy and its two differences (24); 100,000 bins on CIFAR's
#: 3,072 inputs measured 12.3 GB.
IMPRINT_BYTES_PER_WEIGHT = 40


class ImprintBlock(nn.Module):
    """Flatten → Linear(D → N) → ReLU → Linear(N → D), added to the input, reshaped back.

    Build it with :func:`build_imprint_block`; ``thresholds`` are kept as a buffer so the server
    (the attack) and a defender can read the bin layout, but the attack only needs the two
    weights (the thresholds are also ``−linear0.bias``).
    """

    def __init__(self, input_shape: Sequence[int], bins: int) -> None:
        super().__init__()
        self.input_shape = tuple(int(s) for s in input_shape)
        features = math.prod(self.input_shape)
        self.bins = int(bins)
        self.linear0 = nn.Linear(features, self.bins)
        self.linear1 = nn.Linear(self.bins, features)
        self.register_buffer("thresholds", torch.zeros(self.bins))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        hidden = torch.relu(self.linear0(flat))
        return (flat + self.linear1(hidden)).view(x.shape)


class ImprintedModel(nn.Module):
    """The model the malicious server sends: the imprint block in front of the client's model."""

    def __init__(self, imprint: ImprintBlock, model: nn.Module) -> None:
        super().__init__()
        self.imprint = imprint
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.imprint(x))


def statistic_direction(features: int, *, statistic: str, generator: torch.Generator) -> torch.Tensor:
    """The shared row ``w`` of ``linear0``.

    ``"random"`` (default, breaching's ``randn``): a fixed random direction with zero mean and
    norm 1, so ``w·x`` does not move with global brightness and changes under flips and shifts;
    ``"brightness"``: the mean pixel (``w = 1/D``), the paper's simplest choice, which cannot tell
    an image from its mirror image.
    """
    if statistic == "brightness":
        return torch.full((features,), 1.0 / features)
    if statistic == "random":
        w = torch.randn(features, generator=generator, dtype=torch.float64)
        w = w - w.mean()
        return (w / w.norm()).float()
    raise GradleakError(f"unknown imprint statistic {statistic!r}: choose random or brightness")


def quantile_thresholds(mean: float, std: float, bins: int) -> torch.Tensor:
    """``bins`` ascending thresholds: the first far below ``mean``, then the quantiles
    ``i / bins`` (i = 1 … bins−1) of N(mean, std²), so each bin holds an equal share of the mass."""
    dist = NormalDist(mu=float(mean), sigma=float(std))
    values = [mean - LOWEST_THRESHOLD_SIGMAS * std] + [dist.inv_cdf(i / bins) for i in range(1, bins)]
    return torch.tensor(values, dtype=torch.float32)


def build_imprint_block(
    input_shape: Sequence[int],
    bins: int,
    *,
    public_images: torch.Tensor,
    statistic: str = "random",
    seed: int = 0,
) -> ImprintBlock:
    """An imprint block whose bins split the statistic's distribution on ``public_images``.

    The server fits a normal to ``w·x`` over the public images (never the client's batch) and
    places the thresholds at its quantiles; the residual scale makes the block's output differ
    from its input by about :data:`RESIDUAL_RMS` per pixel on those images.
    """
    from gradleak.memory import require_memory

    if bins < 2:
        raise GradleakError(f"--bins must be at least 2 (got {bins}): try --bins 256")
    if bins > MAX_BINS:
        raise GradleakError(f"--bins {bins} is more than {MAX_BINS:,}: that many bins already separate batches of "
                            f"thousands of images and each bin costs a row of the input's size; try --bins 1024")
    shape = tuple(int(s) for s in input_shape)
    features = math.prod(shape)
    require_memory(
        IMPRINT_BYTES_PER_WEIGHT * bins * features,
        what=f"an imprint block of {bins:,} bins on {features:,} inputs (its weights, their gradient and the recovery)",
        fix="use fewer --bins (the default 1024 separates batches of a few hundred images)",
    )
    if tuple(public_images.shape[1:]) != shape:
        raise GradleakError(f"public images are {tuple(public_images.shape[1:])}, the model takes {shape}")
    if public_images.shape[0] < 2:
        raise GradleakError("the imprint block needs at least 2 public images to fit its bins")
    generator = torch.Generator().manual_seed(seed)
    block = ImprintBlock(shape, bins)
    w = statistic_direction(features, statistic=statistic, generator=generator)
    values = public_images.flatten(1).double() @ w.double()
    std = float(values.std())
    if not std > 0:
        raise GradleakError("the public images all have the same statistic: the imprint bins cannot be placed")
    thresholds = quantile_thresholds(float(values.mean()), std, bins)
    c = torch.randn(features, generator=generator)
    c = c / c.norm() * math.sqrt(features)  # RMS 1 per pixel
    # The smallness sits in linear0 (gain), not in the read-out: each unit's output gradient is
    # c·∂L/∂out, as large as an ordinary layer's, so the imprint survives rounding (fp16, int8)
    # as well as the rest of the update. Recovery does not depend on the gain.
    hidden = torch.relu(values.float()[:, None] - thresholds[None, :]).sum(dim=1)
    gain = RESIDUAL_RMS / float(hidden.abs().mean().clamp_min(1e-12))
    with torch.no_grad():
        block.linear0.weight.copy_((gain * w).expand(bins, features))
        block.linear0.bias.copy_(-gain * thresholds)
        block.thresholds.copy_(thresholds)
        block.linear1.weight.copy_(c[:, None].expand(features, bins))
        block.linear1.bias.zero_()
    return block


def imprint_model(
    model: nn.Module,
    input_shape: Sequence[int],
    bins: int,
    *,
    public_images: torch.Tensor,
    statistic: str = "random",
    seed: int = 0,
) -> ImprintedModel:
    """The server's modified model: an imprint block (on the model's device) in front of ``model``."""
    block = build_imprint_block(input_shape, bins, public_images=public_images, statistic=statistic, seed=seed)
    device = next(model.parameters()).device
    return ImprintedModel(block.to(device), model)


def find_imprint_blocks(model: nn.Module) -> list[tuple[str, ImprintBlock]]:
    """The imprint blocks inside ``model`` (name, module), in module order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, ImprintBlock)]
