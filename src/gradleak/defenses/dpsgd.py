"""DP-SGD (Abadi et al., 2016): per-example clipping plus Gaussian noise, at gradient time.

Unlike the other defenses this one changes how the client computes its gradient, so it is not
a transform of a finished :class:`~gradleak.types.SharedUpdate`: the scenario calls
:meth:`DPSGD.private_gradient` instead of an ordinary backward pass. The privacy guarantee
(epsilon for a given delta) comes from Google's ``dp-accounting`` RDP accountant, installed
with ``pip install 'gradleak[dp]'``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from gradleak.defenses.base import DEFENSES, Defense, DefenseKind, SpecError, parse_number
from gradleak.defenses.noise import constant_variances, normal_like
from gradleak.errors import GradleakError
from gradleak.objective import ClientForward, clip_per_example, per_example_norms, trainable_parameter_names
from gradleak.types import NoiseContribution, SharedUpdate

__all__ = ["DPSGD", "clip_per_example", "per_example_norms", "split_dpsgd"]


def check_dp_settings(
    clip: float, sigma: float, delta: float, *, names: tuple[str, str] = ("clip", "sigma"),
    example: str = "dpsgd:clip=1.0,sigma=1.0",
) -> None:
    """Raise one line unless ``clip > 0``, ``sigma >= 0`` (both finite) and ``0 < delta < 1``."""
    bad = []
    if not (math.isfinite(clip) and clip > 0):
        bad.append(f"{names[0]} must be a positive number (got {clip})")
    if not (math.isfinite(sigma) and sigma >= 0):
        bad.append(f"{names[1]} must be >= 0 (got {sigma})")
    if not 0 < delta < 1:
        bad.append(f"delta must be in (0, 1) (got {delta})")
    if bad:
        raise GradleakError(f"bad DP-SGD settings: {'; '.join(bad)}: pass e.g. {example}")


# What gradleak's DP-SGD and Opacus's (defenses/opacus.py) share: the same mechanism, computed two ways.


def dp_noise_contribution(update: SharedUpdate, *, clip: float, sigma: float, mechanism: str) -> NoiseContribution:
    """Noise of std sigma·clip on the sum of clipped per-example gradients, then divided by B."""
    std = sigma * clip / update.batch_size
    return NoiseContribution(
        variances=constant_variances(update, std**2),
        clip=clip,
        description=f"{mechanism} clip {clip:g}, noise std {std:.3g} on the mean gradient",
    )


def refuse_finished_update(name: str, mechanism: str) -> GradleakError:
    """The error for applying a gradient-time defense to a finished update."""
    return GradleakError(
        f"{name} cannot be applied to a finished update: {mechanism} must be applied by the client at "
        "gradient time (the scenario calls private_gradient); use it with --scenario fedsgd"
    )


def check_dp_batch(images: Tensor, targets: Tensor, mechanism: str) -> int:
    """The batch size, after refusing an empty batch or targets that do not match the images."""
    batch = images.shape[0]
    if batch < 1 or targets.shape[0] != batch:
        raise GradleakError(
            f"{mechanism} needs matching non-empty batches (got {batch} images and {targets.shape[0]} targets)"
        )
    return batch


def trivial_epsilon(steps: int, sample_rate: float, sigma: float, mechanism: str) -> float | None:
    """Epsilon where no accountant is needed (0 for no step, inf without noise), after checking the
    inputs; None where an accountant must compute it."""
    if int(steps) != steps or steps < 0:
        raise GradleakError(f"{mechanism} epsilon needs a whole number of steps >= 0 (got {steps})")
    if not 0 < sample_rate <= 1:
        raise GradleakError(
            f"{mechanism} epsilon needs a sample rate in (0, 1] (got {sample_rate}): pass batch size / dataset size"
        )
    if steps == 0:
        return 0.0
    if sigma == 0:
        return math.inf
    return None


@dataclass
class DPSGD:
    """DP-SGD with flat per-example clipping to ``clip`` and Gaussian noise multiplier ``sigma``.

    Spec: ``dpsgd:clip=C,sigma=S[,delta=D]`` (``delta`` defaults to 1e-5 and only matters for
    :meth:`epsilon`). ``sigma`` is the noise multiplier: the noise added to the *sum* of clipped
    per-example gradients has standard deviation ``sigma * clip`` per coordinate.

    Example:
        >>> DPSGD(clip=1.0, sigma=0.5).name
        'dpsgd:clip=1.0,sigma=0.5,delta=1e-05'
    """

    clip: float
    sigma: float
    delta: float = 1e-5
    family: ClassVar[str] = "dpsgd"

    def __post_init__(self) -> None:
        check_dp_settings(self.clip, self.sigma, self.delta)

    @property
    def name(self) -> str:
        return f"dpsgd:clip={self.clip!r},sigma={self.sigma!r},delta={self.delta!r}"

    @property
    def level(self) -> float:
        """Strength on the dpsgd axis: the noise multiplier sigma."""
        return self.sigma

    def noise_contribution(self, update: SharedUpdate) -> NoiseContribution:
        """Noise of std sigma·clip on the sum of clipped per-example gradients, then divided by B."""
        return dp_noise_contribution(update, clip=self.clip, sigma=self.sigma, mechanism="DP-SGD")

    def apply(self, update: SharedUpdate, *, generator: torch.Generator | None = None) -> SharedUpdate:
        """Always raises: DP-SGD acts when the gradient is computed, not on a shared update."""
        raise refuse_finished_update(self.name, "DP-SGD")

    def per_example_gradients(
        self,
        model: torch.nn.Module,
        loss_fn: Callable[[Tensor, Tensor], Tensor],
        images: Tensor,
        targets: Tensor,
    ) -> tuple[Tensor, ...]:
        """Unclipped per-example gradients, one (B, *param.shape) tensor per parameter.

        Computed by the client's forward model (:mod:`gradleak.objective`): ``vmap(grad(loss of
        a batch of one))`` over the batch. Parameters come in ``model.parameters()`` order
        (frozen ones left out, as the scenarios send them).
        """
        forward = ClientForward(model, parameter_names=trainable_parameter_names(model), loss=loss_fn)
        return tuple(g.detach() for g in forward.per_example_gradients(images, targets))

    def private_gradient(self, model: torch.nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], images: Tensor,
                         targets: Tensor, *, generator: torch.Generator | None = None) -> tuple[Tensor, ...]:
        """The DP-SGD gradient the client shares, one tensor per parameter.

        Per-example gradients via ``torch.func`` (``functional_call`` + ``vmap`` + ``grad``;
        each example's loss is ``loss_fn`` on a batch of one), each clipped to joint L2 norm
        ``<= clip`` over all parameters, summed, plus ``N(0, (sigma * clip)^2)`` noise per
        coordinate, divided by the batch size.

        Args:
            model: the client's model (not modified; BatchNorm in training mode is refused).
            loss_fn: ``loss_fn(pred, target)`` with ``pred`` the (B, K) logits and ``target``
                a one-hot or soft-label (B, K) tensor (any per-batch target works).
            images: (B, C, H, W) private inputs.
            targets: (B, ...) targets, first dimension the batch.
            generator: draws the noise reproducibly when given (see
                :func:`gradleak.defenses.noise.normal_like`).

        With ``sigma=0`` and a clip larger than every per-example norm this is the ordinary
        batch-mean gradient of a mean-reduced loss.
        """
        batch = check_dp_batch(images, targets, "DP-SGD")
        clipped = clip_per_example(
            self.per_example_gradients(model, loss_fn, images, targets), self.clip
        )
        out = []
        with torch.no_grad():
            for g in clipped:
                total = g.sum(dim=0)
                if self.sigma > 0:
                    total = total + (self.sigma * self.clip) * normal_like(total, generator)
                out.append(total / batch)
        return tuple(out)

    def epsilon(self, *, steps: int, sample_rate: float) -> float:
        """Epsilon of ``steps`` DP-SGD steps at ``delta``, Poisson sampling at ``sample_rate``.

        Uses the RDP accountant of Google's ``dp-accounting`` (``dp_accounting.rdp``), the
        Poisson-subsampled Gaussian mechanism with noise multiplier ``sigma`` composed
        ``steps`` times (an upper bound on the true epsilon). ``sigma == 0`` gives ``inf``;
        ``steps == 0`` gives ``0``. In federated
        learning ``sample_rate`` is the client's batch size over its dataset size (1 when the
        client uses all its data every step).
        """
        trivial = trivial_epsilon(steps, sample_rate, self.sigma, "DP-SGD")
        if trivial is not None:
            return trivial
        try:
            import dp_accounting  # type: ignore[import-untyped, unused-ignore]
            from dp_accounting.rdp import (  # type: ignore[import-untyped, unused-ignore]
                RdpAccountant,
            )
        except ImportError:
            raise GradleakError(
                "DP-SGD epsilon needs the dp-accounting package: pip install 'gradleak[dp]'"
            ) from None
        event = dp_accounting.PoissonSampledDpEvent(
            float(sample_rate), dp_accounting.GaussianDpEvent(float(self.sigma))
        )
        # The accountant logs (through absl) each fractional RDP order whose series does not
        # converge and is dropped; the bound stays valid, so keep those lines off the console.
        absl_logger = logging.getLogger("absl")
        level = absl_logger.level
        absl_logger.setLevel(max(level, logging.ERROR))
        try:
            accountant = RdpAccountant()
            accountant.compose(event, int(steps))
            return float(accountant.get_epsilon(self.delta))
        finally:
            absl_logger.setLevel(level)


def split_dpsgd(defenses: Iterable[Defense]) -> tuple[DPSGD | None, list[Defense]]:
    """Separate the (at most one) :class:`DPSGD` from the post-hoc defenses, order kept.

    The scenario computes its gradient with the returned ``DPSGD`` (if any) and then passes
    the rest to :func:`~gradleak.defenses.apply_defenses`.
    """
    dp: DPSGD | None = None
    rest: list[Defense] = []
    for defense in defenses:
        if isinstance(defense, DPSGD):
            if dp is not None:
                raise GradleakError(
                    f"at most one dpsgd defense may be given (got {dp.name} and {defense.name})"
                )
            dp = defense
        else:
            rest.append(defense)
    return dp, rest


def parse_dp_settings(arg: str | None, *, clip: str = "clip", sigma: str = "sigma") -> dict[str, float]:
    """Parse ``CLIP_KEY=C,SIGMA_KEY=S[,delta=D]`` (any order) into a dict keyed by those names.

    Shared by the spec builders of the DP-SGD defenses (``dpsgd`` names them ``clip``/``sigma``,
    ``opacus`` ``max_grad_norm``/``noise_multiplier``); raises :class:`SpecError` with the reason.

    Example:
        >>> parse_dp_settings("sigma=0.5,clip=1")
        {'sigma': 0.5, 'clip': 1.0}
    """
    keys = (clip, sigma, "delta")
    if arg is None or not arg.strip():
        raise SpecError(f"missing {clip} and {sigma}")
    values: dict[str, float] = {}
    for part in arg.split(","):
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep:
            raise SpecError(f"{part.strip()!r} is not key=value")
        if key not in keys:
            raise SpecError(f"unknown key {key!r} (keys: {', '.join(keys)})")
        if key in values:
            raise SpecError(f"{key} given twice")
        if key == clip:
            values[key] = parse_number(value, clip, low=0.0, low_open=True)
        elif key == sigma:
            values[key] = parse_number(value, sigma, low=0.0)
        else:
            values[key] = parse_number(value, "delta", low=0.0, high=1.0, low_open=True)
            if values[key] >= 1:
                raise SpecError(f"the delta must be in (0, 1) (got {values[key]:g})")
    missing = [key for key in (clip, sigma) if key not in values]
    if missing:
        raise SpecError(f"missing {' and '.join(missing)}")
    return values


def _build_dpsgd(arg: str | None) -> DPSGD:
    return DPSGD(**parse_dp_settings(arg))


DEFENSES.register(
    "dpsgd",
    DefenseKind(
        name="dpsgd",
        form="dpsgd:clip=C,sigma=S[,delta=D]",
        example="dpsgd:clip=1.0,sigma=1.0",
        summary=(
            "DP-SGD at gradient time: per-example clipping to C, N(0,(S*C)^2) noise on the sum "
            "(S is the noise multiplier), epsilon reported at delta D (default 1e-5)"
        ),
        build=_build_dpsgd,
    ),
)
