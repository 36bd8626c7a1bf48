"""Gradient pruning by magnitude, per parameter tensor (DLG's "gradient pruning")."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from gradleak.defenses.base import DEFENSES, DefenseKind, parse_number
from gradleak.types import NoiseContribution, SharedUpdate


def pruned_count(numel: int, ratio: float) -> int:
    """How many entries of a tensor of ``numel`` entries ``ratio`` prunes: ``ceil(ratio*numel)``.

    Rounded up so that at least ``ratio`` of the entries are zeroed; the product is first
    rounded to 9 decimals so that float error (``0.3 * 10 == 3.0000000000000004``) does not
    prune one entry too many.

    Example:
        >>> pruned_count(10, 0.3), pruned_count(10, 0.25), pruned_count(7, 0.0)
        (3, 3, 0)
    """
    return min(numel, math.ceil(round(ratio * numel, 9)))


def prune_tensor(tensor: torch.Tensor, ratio: float) -> torch.Tensor:
    """A copy of ``tensor`` with its ``pruned_count(numel, ratio)`` smallest magnitudes zeroed.

    Ties at the threshold are broken by position (stable sort), so exactly that many entries
    are set to zero and every kept magnitude is >= every pruned one.
    """
    flat = tensor.detach().reshape(-1).clone()
    k = pruned_count(flat.numel(), ratio)
    if k:
        order = torch.argsort(flat.abs(), stable=True)
        flat[order[:k]] = 0
    return flat.reshape(tensor.shape)


@dataclass(frozen=True)
class Prune:
    """Zero the smallest-magnitude ``ratio`` of the entries of **each** shared tensor.

    Pruning is per tensor (per model parameter), not global over the whole update, following
    the DLG paper's gradient pruning (sparsity 1% .. 70%) and deep-gradient-compression-style
    per-layer thresholds: every layer keeps its own largest ``1 - ratio`` entries, so small
    layers (biases) are not wiped out by large ones. ``ceil(ratio * numel)`` entries are zeroed
    per tensor. Spec: ``prune:RATIO`` with ``RATIO`` in [0, 1].
    """

    ratio: float
    family: ClassVar[str] = "prune"

    @property
    def name(self) -> str:
        return f"prune:{self.ratio!r}"

    @property
    def level(self) -> float:
        """Strength on the prune axis: the share of entries zeroed per tensor."""
        return self.ratio

    def noise_contribution(self, update: SharedUpdate) -> NoiseContribution:
        """The zeros were not sent: they carry no information about the gradient."""
        return NoiseContribution(
            masks=tuple(t != 0 for t in update.tensors),
            description=f"pruning of {self.ratio:g} per tensor (zeros not sent)",
        )

    def apply(
        self, update: SharedUpdate, *, generator: torch.Generator | None = None
    ) -> SharedUpdate:
        tensors = tuple(prune_tensor(t, self.ratio) for t in update.tensors)
        return update.replace_tensors(tensors, self.name)


DEFENSES.register(
    "prune",
    DefenseKind(
        name="prune",
        form="prune:RATIO",
        example="prune:0.3",
        summary="per tensor, zero the RATIO (0..1) of entries of smallest magnitude",
        build=lambda arg: Prune(parse_number(arg, "ratio", low=0.0, high=1.0)),
    ),
)
