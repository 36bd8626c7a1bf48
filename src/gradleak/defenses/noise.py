"""Additive noise defenses: Gaussian (configured by its variance) and Laplacian (by its scale)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from gradleak.defenses.base import DEFENSES, DefenseKind, parse_number
from gradleak.types import NoiseContribution, SharedUpdate


def _draw(like: torch.Tensor, generator: torch.Generator | None, sample: str) -> torch.Tensor:
    """Standard noise shaped like ``like``, on ``like``'s device and (floating) dtype.

    ``sample`` is ``"normal"`` (N(0, 1)) or ``"laplace"`` (Laplace(0, 1), drawn as the difference
    of two Exp(1) variables, which keeps every draw on the generator). With a ``generator`` the
    draw happens on the generator's device (so a seeded CPU generator gives the same numbers
    whatever the tensors' device) and is then moved to ``like``'s device; without one it uses
    the global RNG of ``like``'s device.
    """
    dtype = like.dtype if like.is_floating_point() else torch.float32
    device = generator.device if generator is not None else like.device
    if sample == "normal":
        noise = torch.randn(like.shape, generator=generator, device=device, dtype=dtype)
    else:
        first = torch.empty(like.shape, device=device, dtype=dtype).exponential_(
            generator=generator
        )
        second = torch.empty(like.shape, device=device, dtype=dtype).exponential_(
            generator=generator
        )
        noise = first - second
    return noise.to(like.device)


def constant_variances(update: SharedUpdate, variance: float) -> tuple[torch.Tensor, ...]:
    """The same i.i.d. ``variance`` for every shared tensor (0-d tensors, broadcastable)."""
    return tuple(torch.tensor(variance, dtype=t.dtype, device=t.device) for t in update.tensors)


def normal_like(like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """N(0, 1) noise shaped like ``like`` on its device (see :func:`_draw` for the generator)."""
    return _draw(like, generator, "normal")


@dataclass(frozen=True)
class GaussianNoise:
    """Add i.i.d. Gaussian noise of **variance** ``variance`` to every shared value.

    The spec number is the variance, as in the DLG paper (which sweeps 1e-4 .. 1e-1); the
    standard deviation is ``sqrt(variance)``. Spec: ``gaussian:VARIANCE``.

    Example:
        >>> GaussianNoise(1e-2).std, GaussianNoise(1e-2).family, GaussianNoise(1e-2).level
        (0.1, 'gaussian', 0.01)
    """

    variance: float
    family: ClassVar[str] = "gaussian"

    @property
    def name(self) -> str:
        return f"gaussian:{self.variance!r}"

    @property
    def level(self) -> float:
        """Strength on the gaussian axis: the variance."""
        return self.variance

    def noise_contribution(self, update: SharedUpdate) -> NoiseContribution:
        return NoiseContribution(
            variances=constant_variances(update, self.variance),
            description=f"Gaussian noise of variance {self.variance:g}",
        )

    @property
    def std(self) -> float:
        return math.sqrt(self.variance)

    def apply(
        self, update: SharedUpdate, *, generator: torch.Generator | None = None
    ) -> SharedUpdate:
        with torch.no_grad():
            tensors = tuple(t + self.std * normal_like(t, generator) for t in update.tensors)
        return update.replace_tensors(tensors, self.name)


@dataclass(frozen=True)
class LaplacianNoise:
    """Add i.i.d. Laplace(0, b) noise of **scale** ``b = scale`` to every shared value.

    The spec number is the scale b: mean absolute deviation b, variance 2 b^2.
    Spec: ``laplacian:SCALE``.
    """

    scale: float
    family: ClassVar[str] = "laplacian"

    @property
    def name(self) -> str:
        return f"laplacian:{self.scale!r}"

    @property
    def level(self) -> float:
        """Strength on the laplacian axis: the scale b."""
        return self.scale

    def noise_contribution(self, update: SharedUpdate) -> NoiseContribution:
        variance = 2 * self.scale**2
        return NoiseContribution(
            variances=constant_variances(update, variance),
            description=f"Laplacian noise of scale {self.scale:g} (variance {variance:.3g})",
        )

    def apply(
        self, update: SharedUpdate, *, generator: torch.Generator | None = None
    ) -> SharedUpdate:
        with torch.no_grad():
            tensors = tuple(t + self.scale * _draw(t, generator, "laplace") for t in update.tensors)
        return update.replace_tensors(tensors, self.name)


DEFENSES.register(
    "gaussian",
    DefenseKind(
        name="gaussian",
        form="gaussian:VARIANCE",
        example="gaussian:1e-3",
        summary="add N(0, VARIANCE) noise; the number is the variance, as in DLG (1e-4..1e-1)",
        build=lambda arg: GaussianNoise(parse_number(arg, "variance", low=0.0)),
    ),
)
DEFENSES.register(
    "laplacian",
    DefenseKind(
        name="laplacian",
        form="laplacian:SCALE",
        example="laplacian:1e-2",
        summary="add Laplace(0, SCALE) noise; the number is the scale b (variance 2b^2)",
        build=lambda arg: LaplacianNoise(parse_number(arg, "scale", low=0.0)),
    ),
)
