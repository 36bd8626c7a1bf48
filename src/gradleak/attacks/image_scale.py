"""The image scale an update cannot see, and the prior that sets it.

When a model normalises the output of its first (bias-free up to a per-channel constant) linear
layer with the image's own statistics (BatchNorm in train mode, InstanceNorm), the images ``x``
and ``a·x`` (``a > 0``) give nearly the same update: the first layer's output scales by ``a``,
the normalisation removes it, the backward signal into the first layer scales by ``1/a``, and the
first weight gradient (signal times input) is unchanged. Zero padding scales too; only the
normalisation's ``eps`` tells them apart (a ReLU ConvNet with BatchNorm on a CIFAR-10 image: a
factor 1.25 changes the update by 2.4e-6 relative squared, where a fit leaves ~1e-3). So an attack
that explains the update still recovers the image only up to its brightness.
:func:`undetermined_scale` tests this numerically for any model against the attack's own fit (no
reading of its layers), and :func:`set_scale_by_prior` fixes the factor with a stated prior: the
brightest pixel of a natural image is :data:`NATURAL_IMAGE_MAX`.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from gradleak.scenarios import FedSGD
    >>> _ = torch.manual_seed(0)
    >>> image, label = torch.rand(1, 3, 8, 8), torch.tensor([1])
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(256, 3))
    >>> update = FedSGD().share(net, image, label)
    >>> undetermined_scale(net, update, 0.8 * image, label, fit_error=1e-3)
    True
    >>> undetermined_scale(net, update, 0.8 * image, label, fit_error=1e-9)  # an exact fit sees eps
    False
    >>> round(float(set_scale_by_prior(0.5 * torch.ones(1, 3, 2, 2)).max()), 3)
    0.973
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from gradleak.objective import ClientForward, Loss, one_hot
from gradleak.types import SharedUpdate

# Median brightest pixel (any channel) of 36 natural images: the bundled CIFAR-100 test images 0-19
# and the 16 tuning photos of benchmarks/photos (no CIFAR-10 image). Scaling each of them to it
# (their structure otherwise exact) gives a median 38.0 dB; 29 of the 36 are >= 30 dB.
NATURAL_IMAGE_MAX = 0.973
_PROBE_FACTOR = 1.25
_ROUNDOFF = 1e-12  # relative squared change in float64 below which two updates are the same
_RESOLVED_FRACTION = 0.1  # a change under a tenth of the fit's residual is not seen by the fit


def scale_sensitivity(
    model: nn.Module, update: SharedUpdate, images: torch.Tensor, labels: torch.Tensor, *, loss: Loss | None = None
) -> float:
    """‖u(1.25·x) − u(x)‖² / ‖u(x)‖²: how much the update ``images`` imply changes with their scale (float64)."""
    net = copy.deepcopy(model).double().cpu()
    forward = ClientForward.of(net, update, loss=loss)
    targets = one_hot(labels.cpu(), update.num_classes).double()
    candidate = images.detach().double().cpu()
    with torch.enable_grad():
        base = forward.update(candidate, targets, update)
        scaled = forward.update(_PROBE_FACTOR * candidate, targets, update)
    change = sum(float(((b - s) ** 2).sum()) for b, s in zip(base, scaled))
    size = sum(float((b**2).sum()) for b in base)
    return change / size if size > 0 else math.inf


def undetermined_scale(
    model: nn.Module, update: SharedUpdate, images: torch.Tensor, labels: torch.Tensor, *, fit_error: float,
    loss: Loss | None = None,
) -> bool:
    """Whether scaling ``images`` (a fit with relative update error ``fit_error``) changes the update less
    than that fit can see: then the update does not say the images' scale."""
    sensitivity = scale_sensitivity(model, update, images, labels, loss=loss)
    return sensitivity <= max(_ROUNDOFF, _RESOLVED_FRACTION * fit_error)


def set_scale_by_prior(images: torch.Tensor, *, brightest: float = NATURAL_IMAGE_MAX) -> torch.Tensor:
    """``images`` scaled by one common factor so that their brightest pixel is ``brightest``."""
    top = float(images.max())
    return images if top <= 0 else images * (brightest / top)
