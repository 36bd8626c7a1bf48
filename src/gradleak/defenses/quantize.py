"""Quantisation defenses: half precision and per-tensor symmetric int8.

Both return float32 tensors: the values the server sees after dequantising what was sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from gradleak.defenses.base import DEFENSES, DefenseKind, no_argument
from gradleak.types import NoiseContribution, SharedUpdate

INT8_LEVELS = 127
"""Symmetric int8 uses the integer codes -127 .. 127 (-128 is left unused to stay symmetric)."""


def fp16_roundtrip(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor.half().float()``: round to float16 (magnitudes above 65504 become inf)."""
    return tensor.detach().to(torch.float16).to(torch.float32)


def int8_scale(tensor: torch.Tensor) -> torch.Tensor:
    """The per-tensor symmetric int8 scale ``max|x| / 127`` as a 0-d float32 tensor."""
    if tensor.numel() == 0:
        return torch.zeros((), dtype=torch.float32, device=tensor.device)
    return tensor.detach().abs().max().to(torch.float32) / INT8_LEVELS


def int8_roundtrip(tensor: torch.Tensor) -> torch.Tensor:
    """Quantise to int8 with one symmetric scale per tensor and dequantise to float32.

    ``q = clamp(round(x / s), -127, 127)`` with ``s = max|x| / 127``; the result is ``q * s``,
    so the error is at most ``s / 2`` per entry and the largest magnitude is exact. An all-zero
    tensor stays zero.
    """
    x = tensor.detach().to(torch.float32)
    scale = int8_scale(x)
    if scale.item() == 0:
        return torch.zeros_like(x)
    codes = torch.round(x / scale).clamp(-INT8_LEVELS, INT8_LEVELS).to(torch.int8)
    return codes.to(torch.float32) * scale


def fp16_rounding_variance(values: torch.Tensor) -> torch.Tensor:
    """Per-entry variance of round-to-nearest fp16 error around received fp16 ``values``.

    The error is uniform over one unit in the last place (ulp): variance ulp²/12. A normal fp16
    number has 10 fraction bits, so ulp = 2^(floor(log2|v|) − 10); below 2^-14 the spacing is the
    subnormal 2^-24.

    Example:
        >>> round(float(fp16_rounding_variance(torch.tensor([1.0]))) * 12 * 2**20, 6)  # ulp of 1.0 is 2^-10
        1.0
    """
    magnitude = values.detach().abs().double()
    exponent = torch.floor(torch.log2(magnitude.clamp_min(2.0**-14)))
    ulp = torch.pow(2.0, exponent - 10).clamp_min(2.0**-24)
    return (ulp**2 / 12).to(values.dtype)


def int8_rounding_variance(values: torch.Tensor) -> torch.Tensor:
    """Variance of the per-tensor symmetric int8 rounding error: step²/12, step = max|v|/127."""
    step = int8_scale(values).double()
    return (step**2 / 12).to(values.dtype)


@dataclass(frozen=True)
class HalfPrecision:
    """Share float16 values: each entry becomes ``x.half().float()``. Spec: ``fp16``.

    Example:
        >>> HalfPrecision().family, HalfPrecision().level
        ('fp16', None)
    """

    family: ClassVar[str] = "fp16"
    level: ClassVar[float | None] = None  # one setting: no strength axis

    @property
    def name(self) -> str:
        return "fp16"

    def noise_contribution(self, update: SharedUpdate) -> NoiseContribution:
        """Round-to-nearest error: variance ulp²/12 per received value."""
        return NoiseContribution(
            variances=tuple(fp16_rounding_variance(t) for t in update.tensors),
            description="fp16 rounding (variance ulp²/12 per value)",
        )

    def apply(
        self, update: SharedUpdate, *, generator: torch.Generator | None = None
    ) -> SharedUpdate:
        return update.replace_tensors(tuple(fp16_roundtrip(t) for t in update.tensors), self.name)


@dataclass(frozen=True)
class Int8Quantization:
    """Share int8 values with a per-tensor symmetric scale ``max|x| / 127``. Spec: ``int8``.

    One scale per shared tensor (per model parameter), zero point 0, codes -127 .. 127; the
    server sees the dequantised float32 values (see :func:`int8_roundtrip`).
    """

    family: ClassVar[str] = "int8"
    level: ClassVar[float | None] = None  # one setting: no strength axis

    @property
    def name(self) -> str:
        return "int8"

    def noise_contribution(self, update: SharedUpdate) -> NoiseContribution:
        """Rounding to the tensor's int8 grid: variance step²/12 per value, one step per tensor."""
        return NoiseContribution(
            variances=tuple(int8_rounding_variance(t) for t in update.tensors),
            description="int8 rounding (variance step²/12 per tensor)",
        )

    def apply(
        self, update: SharedUpdate, *, generator: torch.Generator | None = None
    ) -> SharedUpdate:
        return update.replace_tensors(tuple(int8_roundtrip(t) for t in update.tensors), self.name)


def _build_fp16(arg: str | None) -> HalfPrecision:
    no_argument(arg, "fp16")
    return HalfPrecision()


def _build_int8(arg: str | None) -> Int8Quantization:
    no_argument(arg, "int8")
    return Int8Quantization()


DEFENSES.register(
    "fp16",
    DefenseKind(
        name="fp16",
        form="fp16",
        example="fp16",
        summary="share half-precision values (server sees x.half().float())",
        build=_build_fp16,
    ),
)
DEFENSES.register(
    "int8",
    DefenseKind(
        name="int8",
        form="int8",
        example="int8",
        summary="per-tensor symmetric int8 quantisation (scale max|x|/127), dequantised",
        build=_build_int8,
    ),
)
