"""What a server can know about the perturbation a defense put on an update, without ground truth.

Two sources, so that a study can state its threat model:

* **published** -- the defense's declared parameters, as a real server knows them when they are
  part of the protocol (DP-SGD's clip and sigma, a noise variance, a quantiser): read from
  ``update.defenses``.
* **estimated** -- the values of the update alone: exact zeros betray pruning, values that all lie
  on the fp16 or on a per-tensor int8 grid betray the quantiser (whose rounding variance follows
  from the grid), and the additive noise variance is what the final Linear layer's weight
  gradient has beyond its rank: for a batch of B that gradient is a sum of B outer products
  ``δ_i h_iᵀ``, so everything past its B-th singular value is noise.

Example:
    >>> import torch
    >>> from gradleak.models import build_model
    >>> from gradleak.scenarios import FedSGD
    >>> from gradleak.defenses import parse_defenses
    >>> _ = torch.manual_seed(0)
    >>> model = build_model("lenetmnist", channels=1, image_size=28, num_classes=10)
    >>> client = FedSGD(defenses=parse_defenses(["gaussian:1e-4"]), generator=torch.Generator().manual_seed(1))
    >>> update = client.share(model, torch.rand(1, 1, 28, 28), torch.tensor([3]))
    >>> round(float(noise_model(update, source="published").variances[0]), 6)
    0.0001
    >>> estimate = float(noise_model(update, source="estimated").variances[0])
    >>> 0.8e-4 < estimate < 1.2e-4
    True
"""

from __future__ import annotations

import math

import torch

from gradleak.attacks.labels import last_layer_weight_gradient
from gradleak.defenses import DPSGD, GaussianNoise, HalfPrecision, Int8Quantization, LaplacianNoise, Prune
from gradleak.defenses import parse_defense
from gradleak.defenses.quantize import fp16_roundtrip, int8_scale
from gradleak.errors import GradleakError
from gradleak.types import NoiseModel, SharedUpdate

NOISE_SOURCES = ("auto", "published", "estimated")
_ZERO_SHARE_FOR_PRUNING = 0.01  # more exact zeros than this in a tensor: treat zeros as not sent


def fp16_rounding_variance(values: torch.Tensor) -> torch.Tensor:
    """Per-entry variance of round-to-nearest fp16 error around received fp16 ``values``.

    The error is uniform over one unit in the last place (ulp): variance ulp²/12. A normal fp16
    number has 10 fraction bits, so ulp = 2^(floor(log2|v|) − 10); below 2^-14 the spacing is the
    subnormal 2^-24.
    """
    magnitude = values.detach().abs().double()
    exponent = torch.floor(torch.log2(magnitude.clamp_min(2.0**-14)))
    ulp = torch.pow(2.0, exponent - 10).clamp_min(2.0**-24)
    return (ulp**2 / 12).to(values.dtype)


def int8_rounding_variance(values: torch.Tensor) -> torch.Tensor:
    """Variance of the per-tensor symmetric int8 rounding error: step²/12, step = max|v|/127."""
    step = int8_scale(values).double()
    return (step**2 / 12).to(values.dtype)


def _zeros(update: SharedUpdate) -> list[torch.Tensor]:
    return [torch.zeros((), dtype=t.dtype, device=t.device) for t in update.tensors]


def published_noise_model(update: SharedUpdate) -> NoiseModel:
    """The perturbation implied by the defenses the update declares (``update.defenses``)."""
    variances = _zeros(update)
    masks: list[torch.Tensor] | None = None
    clip: float | None = None
    parts: list[str] = []
    for spec in update.defenses:
        defense = parse_defense(spec)
        if hasattr(defense, "noise_contribution"):  # a defense that declares its own noise model
            declared = defense.noise_contribution(update)
            if declared.variances is not None:
                variances = [v + d for v, d in zip(variances, declared.variances)]
            if declared.masks is not None:
                masks = list(declared.masks) if masks is None else [m & d for m, d in zip(masks, declared.masks)]
            clip = declared.clip if declared.clip is not None else clip
            parts.append(declared.description)
        elif isinstance(defense, GaussianNoise):
            variances = [v + defense.variance for v in variances]
            parts.append(f"Gaussian noise of variance {defense.variance:g}")
        elif isinstance(defense, LaplacianNoise):
            variances = [v + 2 * defense.scale**2 for v in variances]
            parts.append(f"Laplacian noise of scale {defense.scale:g} (variance {2 * defense.scale**2:.3g})")
        elif isinstance(defense, DPSGD):
            # Noise of std sigma·clip on the sum of clipped per-example gradients, then divided by B.
            std = defense.sigma * defense.clip / update.batch_size
            variances = [v + std**2 for v in variances]
            clip = defense.clip
            parts.append(f"DP-SGD clip {defense.clip:g}, noise std {std:.3g} on the mean gradient")
        elif isinstance(defense, HalfPrecision):
            variances = [v + fp16_rounding_variance(t) for v, t in zip(variances, update.tensors)]
            parts.append("fp16 rounding (variance ulp²/12 per value)")
        elif isinstance(defense, Int8Quantization):
            variances = [v + int8_rounding_variance(t) for v, t in zip(variances, update.tensors)]
            parts.append("int8 rounding (variance step²/12 per tensor)")
        elif isinstance(defense, Prune):
            masks = [t != 0 for t in update.tensors]
            parts.append(f"pruning of {defense.ratio:g} per tensor (zeros not sent)")
        else:  # a defense registered later without a noise model: say so instead of guessing
            raise GradleakError(
                f"no published noise model for defense {spec!r}: use --noise-source estimated"
            )
    description = "published: " + ("; ".join(parts) if parts else "no defense, exact gradient")
    return NoiseModel(tuple(variances), tuple(masks) if masks is not None else None, clip, "published", description)


def estimated_noise_model(update: SharedUpdate) -> NoiseModel:
    """The perturbation read from the update's own values (see the module docstring)."""
    variances: list[torch.Tensor] = []
    masks: list[torch.Tensor] = []
    pruned = quantised_fp16 = quantised_int8 = 0
    for t in update.tensors:
        sent = t != 0
        if 1 - float(sent.float().mean()) > _ZERO_SHARE_FOR_PRUNING:
            pruned += 1
            masks.append(sent)
        else:
            masks.append(torch.ones_like(sent))
        values = t[sent] if bool(sent.any()) else t.flatten()
        if t.dtype == torch.float32 and bool((fp16_roundtrip(values) == values).all()) and values.numel() > 16:
            variances.append(fp16_rounding_variance(t))
            quantised_fp16 += 1
            continue
        step = float(int8_scale(values))  # the int8 defense's own scale, max|v| / 127
        if step > 0 and values.numel() > 16:
            codes = values.double() / step
            if float((codes - codes.round()).abs().max()) < 1e-3:
                variances.append(int8_rounding_variance(t))
                quantised_int8 += 1
                continue
        variances.append(torch.zeros((), dtype=t.dtype, device=t.device))
    # Additive noise: the final Linear weight gradient beyond rank B (on its sent entries).
    head = last_layer_weight_gradient(update)
    index = next(i for i, t in enumerate(update.tensors) if t is head)
    rows, cols = head.shape
    rank = min(update.batch_size, rows, cols)
    singular = torch.linalg.svdvals(head.detach().double())
    dof = (rows - rank) * (cols - rank)
    additive = float((singular[rank:] ** 2).sum()) / dof if dof > 0 else 0.0
    sent_share = float(masks[index].float().mean())
    additive /= max(sent_share, 1e-12)  # zeros of pruning carry no noise energy
    rounding = float(variances[index].double().mean())
    additive = max(additive - rounding, 0.0)
    # Below ~1e-9 of the head's mean square the residual is float rounding of an exact gradient.
    if additive < 1e-9 * float((head.double() ** 2).mean()):
        additive = 0.0
    variances = [v + additive for v in variances]
    parts = []
    if additive > 0:
        parts.append(f"additive noise of variance {additive:.3g} (the head's gradient beyond rank {rank})")
    if pruned:
        parts.append(f"zeros in {pruned} tensor(s) taken as pruned")
    if quantised_fp16:
        parts.append(f"{quantised_fp16} tensor(s) on the fp16 grid")
    if quantised_int8:
        parts.append(f"{quantised_int8} tensor(s) on an int8 grid")
    description = "estimated from the update: " + ("; ".join(parts) if parts else "no perturbation found")
    return NoiseModel(tuple(variances), tuple(masks) if pruned else None, None, "estimated", description)


def noise_model(update: SharedUpdate, *, source: str = "auto") -> NoiseModel:
    """The noise model from ``source``: ``published``, ``estimated`` or ``auto`` (published when the
    update declares its defenses, otherwise estimated)."""
    if source not in NOISE_SOURCES:
        raise GradleakError(f"unknown noise source {source!r}: choose one of {', '.join(NOISE_SOURCES)}")
    if source == "published" or (source == "auto" and update.defenses):
        return published_noise_model(update)
    return estimated_noise_model(update)


def _sent(update: SharedUpdate, model: NoiseModel, i: int) -> torch.Tensor:
    tensor = update.tensors[i]
    return model.masks[i] if model.masks is not None else torch.ones_like(tensor, dtype=torch.bool)


def expected_noise_energy(update: SharedUpdate, model: NoiseModel) -> float:
    """Σ of the expected noise variance over the entries sent: the squared-L2 gradient distance
    that the true image itself leaves (0 for an exact gradient)."""
    return sum(
        float((v.expand_as(t).double() * _sent(update, model, i)).sum())
        for i, (t, v) in enumerate(zip(update.tensors, model.variances))
    )


def relative_noise_level(update: SharedUpdate, model: NoiseModel) -> float:
    """Expected noise energy over the update's energy (0 for an exact gradient), a scale-free level."""
    noise = expected_noise_energy(update, model)
    signal = sum(float((t.double() ** 2 * _sent(update, model, i)).sum()) for i, t in enumerate(update.tensors))
    return noise / max(signal, 1e-300) if math.isfinite(noise) else math.inf
