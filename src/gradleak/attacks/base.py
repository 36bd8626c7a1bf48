"""What every attack shares: the interface, the gradient-matching helpers, the registry."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Protocol

import torch
from torch import nn

from gradleak.errors import GradleakError
from gradleak.registry import Registry
from gradleak.types import AttackResult, SharedUpdate, StepObserver


class Attack(Protocol):
    """An attack sees the server's model and the shared update, never the private data."""

    name: str

    def check(self, update: SharedUpdate, model: nn.Module | None = None) -> None:
        """Raise GradleakError (with the reason) when the update or model does not meet the attack's needs."""

    def run(
        self,
        model: nn.Module,
        update: SharedUpdate,
        *,
        generator: torch.Generator | None = None,
        observer: StepObserver | None = None,
    ) -> AttackResult: ...


ATTACKS: Registry[type] = Registry("attack")


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels (anisotropic TV), per batch."""
    dx = (images[:, :, :, 1:] - images[:, :, :, :-1]).abs().mean()
    dy = (images[:, :, 1:, :] - images[:, :, :-1, :]).abs().mean()
    return dx + dy


def smooth_total_variation(images: torch.Tensor, smoothing: float, *, reduction: str = "mean") -> torch.Tensor:
    """TV with sqrt(d² + ε²) in place of |d| over vertical and horizontal neighbour differences:
    differentiable everywhere (for L-BFGS). ``reduction`` "mean" averages each direction's terms,
    "sum" adds them (a log prior in a posterior energy: one term per pixel difference)."""
    dy = torch.sqrt((images[..., 1:, :] - images[..., :-1, :]) ** 2 + smoothing**2)
    dx = torch.sqrt((images[..., :, 1:] - images[..., :, :-1]) ** 2 + smoothing**2)
    if reduction == "sum":
        return dy.sum() + dx.sum()
    return dy.mean() + dx.mean()


def squared_l2_distance(dummy: Sequence[torch.Tensor], shared: Sequence[torch.Tensor]) -> torch.Tensor:
    """DLG's distance: Σ‖g' − g‖² over all parameter tensors."""
    return sum(((a - b) ** 2).sum() for a, b in zip(dummy, shared))  # type: ignore[return-value]


def randn_like_on(shape: Sequence[int], device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    """N(0,1) drawn on the CPU (so a seed gives the same start on every device), then moved."""
    return torch.randn(tuple(shape), generator=generator).to(device)


def require_gradient(update: SharedUpdate, attack: str) -> None:
    if update.kind != "gradient":
        raise GradleakError(
            f"attack {attack!r} needs a shared gradient but the scenario shares a {update.kind}: "
            "use --attack ig (which unrolls the client's local steps) or --scenario fedsgd"
        )


def as_gradient(update: SharedUpdate) -> SharedUpdate | None:
    """The gradient behind an update when it is exactly recoverable (FedSGD, or a one-step,
    full-batch FedAvg change, which is −η·gradient); ``None`` otherwise."""
    if update.kind == "gradient":
        return update
    whole_batch = update.local_batch_size is None or update.local_batch_size >= update.batch_size
    if update.kind == "weight_delta" and update.local_steps == 1 and update.local_lr and whole_batch:
        lr = float(update.local_lr)
        return dataclasses.replace(
            update, tensors=tuple(-t / lr for t in update.tensors), kind="gradient", local_lr=None, local_batch_size=None
        )
    return None


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def is_bad(value: float) -> bool:
    return not math.isfinite(value)


def finish(result: AttackResult) -> AttackResult:
    result.images = result.images.detach().clamp(0, 1)
    return result
