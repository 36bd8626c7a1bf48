"""Quantisation defenses: half precision and per-tensor symmetric int8.

Both return float32 tensors: the values the server sees after dequantising what was sent.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gradleak.defenses.base import DEFENSES, DefenseKind, no_argument
from gradleak.types import SharedUpdate

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


@dataclass(frozen=True)
class HalfPrecision:
    """Share float16 values: each entry becomes ``x.half().float()``. Spec: ``fp16``."""

    @property
    def name(self) -> str:
        return "fp16"

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

    @property
    def name(self) -> str:
        return "int8"

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
