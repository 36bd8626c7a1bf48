"""DP-SGD as Opacus computes it: ``opacus:noise_multiplier=S,max_grad_norm=C[,delta=D]``.

gradleak's own ``dpsgd`` defense re-implements DP-SGD with ``torch.func``; this one leaves the
per-sample gradients, the clipping and the noise to Opacus itself (its ``GradSampleModule`` and
``DPOptimizer``), so that a figure measured against it is a figure about the Opacus pipeline a
researcher trains with, not about our re-implementation. Like ``dpsgd`` it acts at gradient
time: the scenario calls :meth:`OpacusDPSGD.private_gradient` instead of a plain backward pass.

The spec parses without Opacus installed (an attacker reading a captured update's defenses does
not need it); computing a gradient or an Opacus epsilon needs ``pip install 'gradleak[opacus]'``.

Example:
    >>> from gradleak.defenses import parse_defense
    >>> parse_defense("opacus:noise_multiplier=1.0,max_grad_norm=0.5").name
    'opacus:noise_multiplier=1.0,max_grad_norm=0.5,delta=1e-05'
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import torch
from torch import Tensor

from gradleak.defenses.base import DEFENSES, DefenseKind
from gradleak.defenses.dpsgd import (
    DPSGD,
    check_dp_batch,
    check_dp_settings,
    dp_noise_contribution,
    parse_dp_settings,
    refuse_finished_update,
    trivial_epsilon,
)
from gradleak.errors import GradleakError
from gradleak.types import NoiseContribution, SharedUpdate

_MISSING = "the opacus defense needs Opacus: pip install 'gradleak[opacus]'"


def require_opacus() -> ModuleType:
    """Import Opacus, or raise the one-line error naming the extra."""
    try:
        import opacus  # type: ignore[import-untyped, unused-ignore]
    except ImportError:
        raise GradleakError(_MISSING) from None
    return opacus


@dataclass(frozen=True)
class OpacusDPSGD:
    """DP-SGD through Opacus: per-sample clipping to ``max_grad_norm``, noise multiplier ``noise_multiplier``.

    The same mechanism as :class:`~gradleak.defenses.DPSGD` (``clip`` = ``max_grad_norm``,
    ``sigma`` = ``noise_multiplier``): the sum of the clipped per-sample gradients gets
    ``N(0, (noise_multiplier * max_grad_norm)^2)`` noise per coordinate and is divided by the
    batch size (Opacus's ``loss_reduction="mean"`` with the batch as expected batch size).

    Example:
        >>> OpacusDPSGD(noise_multiplier=0.5, max_grad_norm=1.0).name
        'opacus:noise_multiplier=0.5,max_grad_norm=1.0,delta=1e-05'
    """

    noise_multiplier: float
    max_grad_norm: float
    delta: float = 1e-5

    def __post_init__(self) -> None:
        check_dp_settings(
            self.max_grad_norm, self.noise_multiplier, self.delta, names=("max_grad_norm", "noise_multiplier"),
            example="opacus:noise_multiplier=1.0,max_grad_norm=1.0",
        )

    @property
    def name(self) -> str:
        return (
            f"opacus:noise_multiplier={self.noise_multiplier!r},"
            f"max_grad_norm={self.max_grad_norm!r},delta={self.delta!r}"
        )

    def as_dpsgd(self) -> DPSGD:
        """gradleak's own DP-SGD with the same settings (for comparison and dp-accounting's epsilon)."""
        return DPSGD(clip=self.max_grad_norm, sigma=self.noise_multiplier, delta=self.delta)

    def apply(self, update: SharedUpdate, *, generator: torch.Generator | None = None) -> SharedUpdate:
        """Always raises: DP-SGD acts when the gradient is computed, not on a shared update."""
        raise refuse_finished_update(self.name, "Opacus DP-SGD")

    def noise_contribution(self, update: SharedUpdate) -> NoiseContribution:
        """Opacus's published noise: std ``noise_multiplier * max_grad_norm / B`` on the mean gradient."""
        return dp_noise_contribution(update, clip=self.max_grad_norm, sigma=self.noise_multiplier, mechanism="DP-SGD (Opacus)")

    def private_gradient(self, model: torch.nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], images: Tensor,
                         targets: Tensor, *, generator: torch.Generator | None = None) -> tuple[Tensor, ...]:
        """The gradient Opacus's ``DPOptimizer`` would step with, one tensor per model parameter.

        A copy of ``model`` is wrapped in ``GradSampleModule`` (the user's model gets no hooks),
        ``loss_fn(pred, targets)`` (batch mean) is backpropagated, and ``DPOptimizer.pre_step``
        clips each sample's gradient, adds the noise (drawn from ``generator`` when given) and
        divides by the batch size. Parameters come in ``model.parameters()`` order.
        """
        require_opacus()
        from opacus import GradSampleModule  # type: ignore[import-untyped, unused-ignore]
        from opacus.optimizers import DPOptimizer  # type: ignore[import-untyped, unused-ignore]
        from opacus.validators import ModuleValidator  # type: ignore[import-untyped, unused-ignore]

        batch = check_dp_batch(images, targets, "Opacus DP-SGD")
        problems = ModuleValidator.validate(model, strict=False)
        if problems:
            reason = " ".join(str(problems[0]).split())
            raise GradleakError(f"Opacus cannot compute per-sample gradients of this model: {reason}")
        private_copy = copy.deepcopy(model)
        params = list(private_copy.parameters())
        for param in params:  # DP-SGD shares every parameter's gradient, as dpsgd does
            param.requires_grad_(True)
            param.grad = None
        wrapped = GradSampleModule(private_copy, loss_reduction="mean")
        optimizer = DPOptimizer(
            torch.optim.SGD(params, lr=1.0),
            noise_multiplier=float(self.noise_multiplier),
            max_grad_norm=float(self.max_grad_norm),
            expected_batch_size=batch,
            loss_reduction="mean",
            generator=generator,
        )
        try:
            with warnings.catch_warnings():  # Opacus's hooks fire on outputs when images need no grad
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                loss_fn(wrapped(images), targets).backward()
            optimizer.pre_step()  # clip per sample, sum, add noise, divide by the batch
            return tuple(p.grad.detach().clone() for p in params)  # type: ignore[union-attr]
        finally:
            wrapped._close()

    def epsilon(self, *, steps: int, sample_rate: float) -> float:
        """Epsilon at ``delta`` from Opacus's own RDP accountant (Poisson sampling at ``sample_rate``).

        :meth:`epsilon_dp_accounting` gives Google dp-accounting's figure for the same mechanism.
        """
        trivial = trivial_epsilon(steps, sample_rate, self.noise_multiplier, "Opacus")
        if trivial is not None:
            return trivial
        require_opacus()
        from opacus.accountants import RDPAccountant  # type: ignore[import-untyped, unused-ignore]

        accountant = RDPAccountant()
        accountant.history = [(float(self.noise_multiplier), float(sample_rate), int(steps))]
        return float(accountant.get_epsilon(delta=self.delta))

    def epsilon_dp_accounting(self, *, steps: int, sample_rate: float) -> float:
        """Epsilon of the same mechanism from Google's dp-accounting (``pip install 'gradleak[dp]'``)."""
        return self.as_dpsgd().epsilon(steps=steps, sample_rate=sample_rate)


def _build_opacus(arg: str | None) -> OpacusDPSGD:
    return OpacusDPSGD(**parse_dp_settings(arg, clip="max_grad_norm", sigma="noise_multiplier"))


DEFENSES.register(
    "opacus",
    DefenseKind(
        name="opacus",
        form="opacus:noise_multiplier=S,max_grad_norm=C[,delta=D]",
        example="opacus:noise_multiplier=1.0,max_grad_norm=1.0",
        summary=(
            "DP-SGD computed by Opacus (GradSampleModule + DPOptimizer) at gradient time; "
            "epsilon from Opacus's RDP accountant at delta D (needs pip install 'gradleak[opacus]')"
        ),
        build=_build_opacus,
    ),
)
