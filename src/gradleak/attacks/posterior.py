"""``map``: maximum-a-posteriori gradient inversion for defended (noisy, pruned, quantised) updates.

Under additive noise the exact attacks break: the analytic walk divides by single gradient
entries and amplifies the noise layer by layer, and gradient matching that ignores the noise fits
it. Measured on bundled CIFAR-100 image 3 with ``gaussian:1e-4``: the analytic solve gives 5.6 dB;
the Cramér-Rao bound of the image given the gradient alone (no prior) is 6.8 dB, because the
Jacobian of the LeNet gradient w.r.t. the image has singular values down to 2.6e-3
(``benchmarks/defense_identifiability.py``). So a prior is not optional, and its weight must
follow the noise. This attack minimises the negative log posterior

    E(x) = Σ_entries sent  (∇W(x, y) − g)² / (2 v)  +  λ · TV_ε(x),        x ∈ [0, 1]

(the TV of the colour differences weighted more than that of luminance) with the per-entry noise variance ``v`` from a :class:`~gradleak.types.NoiseModel` (published
defense parameters, or estimated from the update; see :mod:`gradleak.attacks.noise_model`),
pruned entries left out (a mask-aware distance), DP-SGD's clipping modelled when its clip is
known, labels from the last layer's gradient, and a smooth total variation prior of fixed
strength λ, fitted by maximum likelihood to natural images from three sources
(``benchmarks/fit_image_prior.py``). Because ``v`` scales the data term, the prior's relative
weight grows with the noise: the regulariser follows the update's noise model, never the ground truth.

The optimisation is a continuation: L-BFGS from a flat grey image under an inflated noise
variance (the prior dominates and fixes the coarse image), then the variance is lowered stage by
stage to the modelled one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from gradleak.attacks.base import ATTACKS, AttackContext, BaseAttack, model_device, require_gradient, smooth_total_variation
from gradleak.attacks.labels import idlg_label, restore_batch_labels
from gradleak.attacks.noise_model import NOISE_SOURCES, noise_model
from gradleak.errors import GradleakError
from gradleak.objective import ClientForward, Loss, one_hot
from gradleak.types import AttackResult, NoiseModel, SharedUpdate, StepReport

# Continuation: noise variances tried, as shares of the update's mean square entry, before the
# modelled one. An exact gradient ends at the floor share, where the prior is negligible.
_STAGE_SHARES = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)
# Smallest noise variance modelled, as a share of the mean square entry: float32 gradients of the
# same image differ by about this much; 1e-7 held fp16 updates at 38-43 dB on the tuning photos
# imagenet_00..03, 1e-8 lets them reach their rounding (1e-9 overflows float32).
_FLOOR_SHARE = 1e-8
# A data term up to this multiple of its expectation at the true image counts as explained down to
# the noise (the discrepancy principle; the chi-square's spread is tiny for thousands of entries).
_NOISE_FLOOR_RATIO = 2.0
_NON_FINITE_RETRIES = 3  # restarts from the last finite iterate before giving up


def prior_terms(images: torch.Tensor, smoothing: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(smooth TV of the luminance, smooth TV of the two colour differences) of RGB images, summed."""
    luma = images.mean(dim=1, keepdim=True)
    chroma = images[:, (0, 2)] - luma
    return (smooth_total_variation(luma, smoothing, reduction="sum"),
            smooth_total_variation(chroma, smoothing, reduction="sum"))


def image_prior(images: torch.Tensor, smoothing: float, *, chroma_weight: float) -> torch.Tensor:
    """Smooth TV of luminance plus ``chroma_weight`` × smooth TV of the two colour differences
    (RGB images); plain smooth TV for other channel counts."""
    if images.shape[1] != 3 or chroma_weight == 1.0:
        return smooth_total_variation(images, smoothing, reduction="sum")
    luma_tv, chroma_tv = prior_terms(images, smoothing)
    return luma_tv * 3 + chroma_weight * chroma_tv


@dataclass
class MapInversion(BaseAttack):
    """Noise-aware MAP inversion (see the module docstring).

    Example:
        >>> import torch
        >>> from gradleak.data import load_samples
        >>> from gradleak.defenses import parse_defenses
        >>> from gradleak.models import build_model
        >>> from gradleak.metrics import psnr
        >>> from gradleak.scenarios import FedSGD
        >>> images, labels = load_samples("mnist", [0], split="test")
        >>> _ = torch.manual_seed(1234)
        >>> model = build_model("lenetmnist", channels=1, image_size=28, num_classes=10)
        >>> client = FedSGD(defenses=parse_defenses(["gaussian:1e-4"]), generator=torch.Generator().manual_seed(1))
        >>> result = MapInversion(iterations=200).run(model, client.share(model, images, labels))
        >>> psnr(result.images, images) > 20
        True
    """

    iterations: int = 400  # L-BFGS function evaluations over all continuation stages
    # The prior's rates, λ_L = 3·tv_weight on luminance TV and λ_C = chroma_weight·tv_weight on the
    # colour differences' TV, are its maximum-likelihood fit to 56 natural images (bundled CIFAR-10
    # and CIFAR-100 test images 0-19, the 16 tuning photos of benchmarks/photos: λ_L 8.21, λ_C 23.8;
    # benchmarks/fit_image_prior.py), so that E(x) is a true negative log posterior, not a weight
    # tuned to one dataset (the 15 held-out photos alone give 8.41 and 25.7). Before: 3 and 4, chosen
    # on CIFAR-100 under gaussian:1e-4; the fit gives +0.1 dB median on six such cases (600 evaluations).
    tv_weight: float = 2.74
    chroma_weight: float = 8.70
    smoothing: float = 0.01  # ε of the smooth TV (pixel units)
    clamp: bool = True  # box constraint: the model sees clamp(x, 0, 1)
    noise_source: str = "auto"  # auto | published | estimated (see gradleak.attacks.noise_model)
    init: torch.Tensor | None = None  # a start instead of flat grey
    noise: NoiseModel | None = None  # a noise model already derived from the same update (else derived here)
    snapshot_every: int = 10
    loss: Loss | None = None  # the client's loss(logits, target probabilities); None: soft-label cross entropy
    name: str = "map"

    def check(self, update: SharedUpdate, model: nn.Module | None = None) -> None:
        require_gradient(update, self.name)
        if self.iterations < 1:
            raise GradleakError(f"--iters must be at least 1 (got {self.iterations})")
        if self.tv_weight < 0:
            raise GradleakError(f"--tv-weight must be >= 0 (got {self.tv_weight})")
        if self.noise_source not in NOISE_SOURCES:
            raise GradleakError(
                f"unknown --noise-source {self.noise_source!r}: choose one of {', '.join(NOISE_SOURCES)}"
            )

    def reconstruct(self, model: nn.Module, update: SharedUpdate, context: AttackContext) -> AttackResult:
        device, generator, observer = context.device, context.generator, context.observer
        noise = self.noise if self.noise is not None else noise_model(update, source=self.noise_source)
        labels = torch.tensor([idlg_label(update)]) if update.batch_size == 1 else restore_batch_labels(update)
        shape = (update.batch_size, *update.input_shape)
        if self.init is not None:
            x0 = self.init.detach().to(device).clone()
        else:
            x0 = torch.full(shape, 0.5, device=device)
            if update.batch_size > 1:  # break the symmetry between the batch's images
                x0 = x0 + 0.01 * torch.randn(shape, generator=generator).to(device)
        energy = _Energy(
            model, update, noise, labels, prior=self.tv_weight, smoothing=self.smoothing, clamp=self.clamp,
            chroma_weight=self.chroma_weight, loss=self.loss,
        )
        x = x0.clone().requires_grad_(True)
        losses: list[float] = []
        snapshots: list[tuple[int, torch.Tensor]] = []
        evaluations = 0
        # (variances are already clamped to the floor, so the largest is at least the floor). From a
        # start, skip the stages whose variance exceeds the misfit the start already has: they would
        # only pull a good start towards the prior.
        ceiling = energy.residual_mean_square(x0) if self.init is not None else math.inf
        stages = [
            s * energy.mean_square for s in _STAGE_SHARES
            if energy.max_variance < s * energy.mean_square < ceiling
        ]
        stages.append(None)  # the modelled noise itself
        budget = [max(1, self.iterations // (2 * len(stages)))] * (len(stages) - 1)
        budget.append(max(1, self.iterations - sum(budget)))
        stop_reason = "max_iterations"
        finite = x.detach().clone()  # the last iterate whose energy was finite
        non_finite = 0
        for inflated, its in zip(stages, budget):
            energy.stage = inflated
            limit = evaluations + its if inflated is not None else self.iterations
            while evaluations < limit and non_finite <= _NON_FINITE_RETRIES:
                optimizer = torch.optim.LBFGS(
                    [x], lr=1, max_iter=limit - evaluations, history_size=50, line_search_fn="strong_wolfe",
                    tolerance_grad=1e-10, tolerance_change=1e-12,
                )

                def closure() -> torch.Tensor:
                    nonlocal evaluations
                    optimizer.zero_grad()
                    value = energy(x)
                    if not math.isfinite(float(value.detach())):
                        raise FloatingPointError("non-finite posterior energy")
                    finite.copy_(x.detach())
                    value.backward()
                    evaluations += 1
                    losses.append(float(value.detach()))
                    if evaluations % self.snapshot_every == 0:
                        current = x.detach().clamp(0, 1).cpu()
                        snapshots.append((evaluations, current))
                        if observer is not None:
                            observer(StepReport(iteration=evaluations, loss=losses[-1], images=current, objective="posterior energy"))
                    return value

                before = evaluations
                try:
                    optimizer.step(closure)
                except FloatingPointError:
                    # A line-search trial left the region where the energy is finite (a stiff,
                    # near-exact noise model): go back to the last finite iterate, fresh history.
                    with torch.no_grad():
                        x.copy_(finite)
                    non_finite += 1
                    continue
                # In the last stage L-BFGS may stop early when its history goes stale: restart it
                # while budget is left and the update is not yet explained down to its noise.
                if inflated is not None or evaluations - before < 3:
                    break
                if energy.evaluate(x.detach())[1] <= _NOISE_FLOOR_RATIO:
                    break
            if non_finite > _NON_FINITE_RETRIES:
                stop_reason = "stopped: the posterior energy kept becoming non-finite (last finite iterate kept)"
                break
        images = x.detach().clamp(0, 1).cpu()
        energy.stage = None
        final, discrepancy = energy.evaluate(images.to(device))
        if stop_reason == "max_iterations":
            stop_reason = f"MAP inversion under {noise.description}; {noise_floor_verdict(discrepancy, evaluations)}"
        return AttackResult(
            images=images,
            labels=labels,
            losses=losses or [final],
            iterations=evaluations,
            stop_reason=stop_reason,
            snapshots=snapshots,
            extras={
                "posterior_energy": final,
                "discrepancy": discrepancy,  # data term / its expectation at the true image
                "noise_variance_mean": energy.mean_variance,
                "continuation_stages": float(len(stages)),
            },
        )


def noise_floor_verdict(discrepancy: float, evaluations: int) -> str:
    """Whether a MAP result explains the update down to its noise (the stop rule), in words.

    Example:
        >>> noise_floor_verdict(0.8, 400)
        'reached its noise floor (data term 0.80× its expectation at the true image)'
    """
    if discrepancy <= _NOISE_FLOOR_RATIO:
        return f"reached its noise floor (data term {discrepancy:.2f}× its expectation at the true image)"
    return (
        f"did not reach its noise floor: data term {discrepancy:.1f}× its expectation at the true image "
        f"after {evaluations} evaluations (raise --iters)"
    )


def posterior_energy(
    model: nn.Module, update: SharedUpdate, noise: NoiseModel, images: torch.Tensor, labels: torch.Tensor,
    attack: MapInversion,
) -> tuple[float, float]:
    """(E(x), data term / its expectation at the true image) for a candidate.

    Lower E is more probable under ``noise`` and the attack's prior. The data term of the true
    image is a sum of squared standardised noise, half a chi-square with one degree of freedom per
    sent entry, so its expectation is (entries sent)/2: a ratio near or below 1 means the
    candidate explains the update down to its noise (the discrepancy principle).
    """
    energy = _Energy(
        model, update, noise, labels, prior=attack.tv_weight, smoothing=attack.smoothing, clamp=attack.clamp,
        chroma_weight=attack.chroma_weight, loss=attack.loss,
    )
    return energy.evaluate(images.to(model_device(model)))


class _Energy:
    """E(x) of the module docstring, with the noise variance optionally inflated to ``stage``."""

    def __init__(
        self, model: nn.Module, update: SharedUpdate, noise: NoiseModel, labels: torch.Tensor, *,
        prior: float, smoothing: float, clamp: bool, chroma_weight: float = 1.0, loss: Loss | None = None,
    ) -> None:
        device = model_device(model)
        self.forward = ClientForward.of(model, update, loss=loss)
        self.model, self.update, self.noise, self.labels = model, update, noise, labels.to(device)
        self.prior, self.smoothing, self.clamp = prior, smoothing, clamp
        self.chroma_weight = chroma_weight
        self.shared = [t.to(device) for t in update.tensors]
        self.masks = [m.to(device) for m in noise.masks] if noise.masks is not None else [None] * len(self.shared)
        sent = [t if m is None else t[m] for t, m in zip(self.shared, self.masks)]
        count = sum(s.numel() for s in sent)
        self.mean_square = float(sum(float((s.double() ** 2).sum()) for s in sent)) / max(count, 1)
        self.expected_data = count / 2
        floor = _FLOOR_SHARE * self.mean_square
        self.variances = [v.to(device).clamp_min(floor) for v in noise.variances]
        self.max_variance = max(float(v.max()) for v in self.variances)
        self.mean_variance = float(
            sum(float(v.expand_as(t).double().sum()) for v, t in zip(self.variances, self.shared))
        ) / max(sum(t.numel() for t in self.shared), 1)
        self.stage: float | None = None  # an inflated noise variance (continuation), None: the modelled one

    def terms(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(data term, weighted prior term) of E(x)."""
        seen = x.clamp(0, 1) if self.clamp else x
        targets = one_hot(self.labels, self.update.num_classes).to(seen.dtype)
        predicted = self.forward.gradient(seen, targets, create_graph=True, clip=self.noise.clip)
        data = torch.zeros((), device=x.device, dtype=x.dtype)
        for p, s, v, m in zip(predicted, self.shared, self.variances, self.masks):
            variance = v if self.stage is None else v.clamp_min(self.stage)
            residual = (p - s) ** 2 / (2 * variance)
            data = data + (residual if m is None else residual * m).sum()
        return data, self.prior * image_prior(seen, self.smoothing, chroma_weight=self.chroma_weight)

    def residual_mean_square(self, x: torch.Tensor) -> float:
        """Mean of (∇W(x) − g)² over the sent entries: the noise variance that ``x`` explains."""
        seen = x.clamp(0, 1) if self.clamp else x
        targets = one_hot(self.labels, self.update.num_classes).to(seen.dtype)
        with torch.enable_grad():
            predicted = self.forward.gradient(seen, targets, clip=self.noise.clip)
        total = count = 0.0
        for p, s, m in zip(predicted, self.shared, self.masks):
            residual = (p.detach() - s).double() ** 2
            total += float(residual.sum() if m is None else residual[m].sum())
            count += float(residual.numel() if m is None else m.sum())
        return total / max(count, 1.0)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        data, prior = self.terms(x)
        return data + prior

    def evaluate(self, x: torch.Tensor) -> tuple[float, float]:
        """(E(x), data term / its expectation at the true image), from one evaluation."""
        data, prior = self.terms(x)
        return float((data + prior).detach()), float(data.detach()) / max(self.expected_data, 1.0)


ATTACKS.register("map", MapInversion)
