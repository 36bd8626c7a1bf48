"""What every attack shares: the interface, the base that owns ``run``, the gradient-matching
helpers, the registry.

An attack is anything with ``name``, ``check(update, model)`` and ``run(model, update, *,
generator, observer)`` (:class:`Attack`, what a plugin must provide). Subclassing
:class:`BaseAttack` gives ``run`` for free: it checks, puts the update on the model's device,
times the attack (without the observer's time), calls the subclass's :meth:`BaseAttack.reconstruct`
and finishes the result (detached images clipped to [0, 1], on the CPU).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from gradleak.errors import GradleakError
from gradleak.registry import Registry
from gradleak.types import AttackResult, SharedUpdate, StepObserver, StepReport


class Attack(Protocol):
    """An attack sees the server's model and the shared update, never the private data."""

    name: str

    def check(self, update: SharedUpdate, model: nn.Module | None = None) -> None:
        """Raise GradleakError (with the reason) when the update or model does not meet the attack's needs."""

    def run(self, model: nn.Module, update: SharedUpdate, *, generator: torch.Generator | None = None,
            observer: StepObserver | None = None) -> AttackResult:
        """Reconstruct the private batch from the model and update (:class:`BaseAttack` implements it)."""


ATTACKS: Registry[type] = Registry("attack")


@dataclass(frozen=True)
class AttackContext:
    """What :meth:`BaseAttack.run` hands :meth:`BaseAttack.reconstruct` besides the model and update."""

    device: torch.device  # the model's; the update's tensors are already on it
    generator: torch.Generator | None = None  # the attack's random stream (seeded: reproducible)
    observer: StepObserver | None = None  # per-iteration reports; the time spent in it is not the attack's


class BaseAttack:
    """The shared ``run`` of every built-in attack; a subclass implements :meth:`reconstruct`
    (and :meth:`check` when it refuses something). Subclasses are usually dataclasses whose fields
    are their settings.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from gradleak.types import AttackResult
        >>> from gradleak.scenarios import FedSGD
        >>> class Grey(BaseAttack):
        ...     name = "grey"
        ...     def reconstruct(self, model, update, context):
        ...         images = torch.full((update.batch_size, *update.input_shape), 0.5, device=context.device)
        ...         return AttackResult(images=images, labels=torch.zeros(update.batch_size), losses=[], iterations=0)
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
        >>> result = Grey().run(net, FedSGD().share(net, torch.rand(2, 3, 2, 2), torch.tensor([0, 1])))
        >>> tuple(result.images.shape), result.seconds >= 0
        ((2, 3, 2, 2), True)
    """

    name: str = "attack"

    def check(self, update: SharedUpdate, model: nn.Module | None = None) -> None:
        """Raise GradleakError (one line: what is wrong, how to fix it) for what the attack cannot do."""

    def reconstruct(self, model: nn.Module, update: SharedUpdate, context: AttackContext) -> AttackResult:
        """The attack's own part: images and labels from the model and the update (see :class:`AttackContext`)."""
        raise NotImplementedError(f"{type(self).__name__} must implement reconstruct(model, update, context)")

    def run(
        self,
        model: nn.Module,
        update: SharedUpdate,
        *,
        generator: torch.Generator | None = None,
        observer: StepObserver | None = None,
    ) -> AttackResult:
        """Check, move the update to the model's device, time :meth:`reconstruct`, finish its result."""
        self.check(update, model)
        device = model_device(model)
        timed = _TimedObserver(observer) if observer is not None else None
        start = time.perf_counter()
        result = self.reconstruct(model, update.to(device), AttackContext(device, generator, timed))
        # The attack's own wall time: the runner's scoring and progress bar are not the attack's.
        result.seconds = time.perf_counter() - start - (timed.seconds if timed is not None else 0.0)
        return finish(result)


class _TimedObserver:
    """An observer that adds up the time spent in it."""

    def __init__(self, observer: StepObserver) -> None:
        self.observer, self.seconds = observer, 0.0

    def __call__(self, report: StepReport) -> None:
        start = time.perf_counter()
        try:
            self.observer(report)
        finally:
            self.seconds += time.perf_counter() - start


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
    """The result as every attack returns it: detached images clipped to [0, 1], images and labels on the CPU."""
    result.images = result.images.detach().clamp(0, 1).cpu()
    result.labels = result.labels.detach().cpu()
    return result
