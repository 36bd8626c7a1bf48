"""Image-reconstruction metrics. PSNR and SSIM come from scikit-image; matching from scipy;
ST-LPIPS (a learned perceptual distance, :mod:`gradleak.metrics.st_lpips`) when the
``perceptual`` extra is installed.

scikit-image rather than torchmetrics because it imports in a fraction of the time (every run
scores its result); the tests check both against each other.

Example:
    >>> import torch
    >>> a = torch.zeros(1, 1, 8, 8); b = torch.full((1, 1, 8, 8), 0.1)
    >>> round(psnr(a, b), 3)
    20.0
    >>> mse(a, b)
    0.010000000707805157
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from gradleak.registry import Registry


def mse(reconstruction: torch.Tensor, target: torch.Tensor) -> float:
    """Mean squared error over all pixels."""
    return float(torch.mean((reconstruction.detach().float().cpu() - target.detach().float().cpu()) ** 2))


def psnr(reconstruction: torch.Tensor, target: torch.Tensor, *, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB of one image or batch (over all pixels), via scikit-image.

    An exact reconstruction has infinite PSNR; we report it as ``inf`` rather than hiding it.
    """
    from skimage.metrics import peak_signal_noise_ratio

    rec = reconstruction.detach().double().cpu().numpy()
    tgt = target.detach().double().cpu().numpy()
    if np.array_equal(rec, tgt):
        return math.inf
    return float(peak_signal_noise_ratio(tgt, rec, data_range=data_range))


def mean_psnr(reconstructions: torch.Tensor, targets: torch.Tensor) -> float:
    """The PSNR gradleak reports for a batch: the mean of its images' PSNRs (images in the same
    order). One image: its PSNR. Not the PSNR of the batch's MSE, which a single bad image dominates.

    Example:
        >>> a = torch.zeros(2, 1, 4, 4); b = torch.stack([torch.full((1, 4, 4), 0.1), torch.full((1, 4, 4), 0.01)])
        >>> round(mean_psnr(b, a), 2), round(psnr(b, a), 2)
        (30.0, 22.97)
    """
    if reconstructions.dim() == 3:
        return psnr(reconstructions, targets)
    return float(np.mean([psnr(r, t) for r, t in zip(reconstructions, targets)]))


def psnr_of_mse(value: float, *, data_range: float = 1.0) -> float:
    """10·log10(range² / MSE): ``inf`` for an MSE of 0."""
    return math.inf if value <= 0 else 10 * math.log10(data_range**2 / value)


LEARNED_METRIC_MIN_SIZE = 24
SSIM_WINDOW = 11  # the Gaussian window (sigma 1.5, truncated at 3.5 sigma) spans 11 pixels


def ssim(reconstruction: torch.Tensor, target: torch.Tensor, *, data_range: float = 1.0) -> float:
    """Structural similarity, mean over the batch, via scikit-image.

    Settings are the common ones (and torchmetrics' defaults): Gaussian window σ = 1.5,
    population covariance, K1 = 0.01, K2 = 0.03. NaN for inputs that are not images at least
    11 pixels on each side (the Gaussian window's extent): SSIM is not defined there.
    """
    from skimage.metrics import structural_similarity

    rec = _batched(reconstruction).double().numpy()
    tgt = _batched(target).double().numpy()
    if rec.ndim != 4 or min(rec.shape[-2:]) < SSIM_WINDOW:
        return float("nan")
    values = [
        structural_similarity(
            t, r, data_range=data_range, channel_axis=0, gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False,
        )
        for r, t in zip(rec, tgt)
    ]
    return float(np.mean(values))


def _batched(images: torch.Tensor) -> torch.Tensor:
    images = images.detach().float().cpu()
    return images.unsqueeze(0) if images.dim() == 3 else images


def pairwise_mse(reconstructions: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    """(B_rec, B_target) matrix of per-image MSE."""
    rec = reconstructions.detach().float().cpu().flatten(1)
    tgt = targets.detach().float().cpu().flatten(1)
    return (torch.cdist(rec, tgt) ** 2 / rec.shape[1]).numpy()


def match_reconstructions(reconstructions: torch.Tensor, targets: torch.Tensor) -> list[int]:
    """Optimal one-to-one assignment of reconstructions to targets by MSE (Hungarian algorithm).

    Returns ``order`` such that ``reconstructions[order[i]]`` is matched to ``targets[i]``.
    A batch attack returns images in no particular order, so metrics are taken after matching.

    Example:
        >>> t = torch.stack([torch.zeros(1, 2, 2), torch.ones(1, 2, 2)])
        >>> match_reconstructions(t.flip(0), t)
        [1, 0]
    """
    from scipy.optimize import linear_sum_assignment

    cost = pairwise_mse(reconstructions, targets)
    rec_idx, tgt_idx = linear_sum_assignment(cost)
    order = [0] * targets.shape[0]
    for r, t in zip(rec_idx, tgt_idx):
        order[int(t)] = int(r)
    return order


@dataclass(frozen=True)
class MetricSpec:
    """A per-image metric: ``function(reconstruction, target) -> float`` on (C, H, W) in [0, 1]."""

    name: str
    function: Callable[[torch.Tensor, torch.Tensor], float]
    higher_is_better: bool = True
    summary: str = ""


#: Metrics computed for every scored image beyond MSE, PSNR and SSIM (register your own with
#: ``gradleak.register_metric``); their values land in ``ImageScore.extra`` and ``metrics.json``.
METRICS: Registry[MetricSpec] = Registry("metric")


@dataclass(frozen=True)
class ImageScore:
    index: int
    label: int | None  # None when the true labels were not given
    recovered_label: int | None  # None when the attack recovered none
    mse: float
    psnr: float
    ssim: float
    st_lpips: float | None = None  # None: the perceptual extra is not installed
    lpips: float | None = None  # None: no lpips package, torchvision or cached AlexNet weights
    extra: dict[str, float] = field(default_factory=dict)  # registered metrics, by name


@dataclass(frozen=True)
class BatchScore:
    """Metrics of a reconstruction against the private batch, after optimal matching."""

    per_image: list[ImageScore]
    order: list[int]
    #: fraction of the batch's labels recovered, compared as multisets (see :func:`label_accuracy`);
    #: None when either side's labels are unknown
    label_accuracy: float | None

    @property
    def mse(self) -> float:
        return float(np.mean([s.mse for s in self.per_image]))

    @property
    def psnr(self) -> float:
        """The mean of the per-image PSNRs (see :func:`mean_psnr`)."""
        return float(np.mean([s.psnr for s in self.per_image]))

    @property
    def psnr_of_mse(self) -> float:
        """The PSNR of the batch MSE (:attr:`mse`); at most :attr:`psnr` (Jensen)."""
        return psnr_of_mse(self.mse)

    @property
    def ssim(self) -> float:
        return float(np.mean([s.ssim for s in self.per_image]))

    @property
    def st_lpips(self) -> float | None:
        """Mean ST-LPIPS over the images (lower is closer); None without the perceptual extra."""
        values = [s.st_lpips for s in self.per_image if s.st_lpips is not None]
        return float(np.mean(values)) if values else None

    @property
    def lpips(self) -> float | None:
        """Mean LPIPS proper over the images; None where it cannot run offline."""
        values = [s.lpips for s in self.per_image if s.lpips is not None]
        return float(np.mean(values)) if values else None


def label_accuracy(recovered: torch.Tensor, true: torch.Tensor) -> float:
    """Fraction of labels recovered, as a multiset (order-free), so batch results are fair.

    Example:
        >>> label_accuracy(torch.tensor([3, 1, 1]), torch.tensor([1, 3, 2]))
        0.6666666666666666
    """
    from collections import Counter

    rec = Counter(int(x) for x in recovered.flatten())
    tru = Counter(int(x) for x in true.flatten())
    return sum((rec & tru).values()) / max(1, sum(tru.values()))


def score_batch(
    reconstructions: torch.Tensor,
    targets: torch.Tensor,
    *,
    true_labels: torch.Tensor | None,
    recovered_labels: torch.Tensor | None,
    indices: list[int] | None = None,
) -> BatchScore:
    """Match reconstructions to targets (optimal assignment by MSE), then score each pair."""
    from gradleak.metrics import lpips_metric
    from gradleak.metrics import st_lpips as perceptual

    order = match_reconstructions(reconstructions, targets)
    matched = reconstructions[order]
    # The learned metrics' AlexNet needs images of about 24 px or more (three poolings after a stride-4 filter).
    big_enough = targets.dim() == 4 and min(targets.shape[-2:]) >= LEARNED_METRIC_MIN_SIZE
    distances = perceptual.st_lpips(matched, targets) if big_enough and perceptual.available() else [None] * targets.shape[0]
    learned = (lpips_metric.lpips_distances(matched, targets) if big_enough and lpips_metric.available()
               else [None] * targets.shape[0])
    scores = [
        ImageScore(
            index=indices[i] if indices is not None else i,
            label=None if true_labels is None else int(true_labels[i]),
            # The label the attack attached to the reconstruction matched to this image.
            recovered_label=None if recovered_labels is None else int(recovered_labels[order[i]]),
            mse=mse(matched[i], targets[i]),
            psnr=psnr(matched[i], targets[i]),
            ssim=ssim(matched[i], targets[i]),
            st_lpips=distances[i],
            lpips=learned[i],
            extra={name: float(METRICS.get(name).function(matched[i], targets[i])) for name in METRICS.names()},
        )
        for i in range(targets.shape[0])
    ]
    return BatchScore(
        per_image=scores,
        order=order,
        label_accuracy=None
        if true_labels is None or recovered_labels is None
        else label_accuracy(recovered_labels, true_labels),
    )


__all__ = [
    "BatchScore",
    "ImageScore",
    "label_accuracy",
    "match_reconstructions",
    "mean_psnr",
    "mse",
    "pairwise_mse",
    "psnr",
    "psnr_of_mse",
    "score_batch",
    "ssim",
]
