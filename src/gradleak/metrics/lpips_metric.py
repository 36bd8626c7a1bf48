"""LPIPS proper (Zhang et al. 2018, AlexNet), only where the user already has what it needs.

It needs the ``lpips`` package, torchvision and torchvision's AlexNet weights in the torch hub
cache; gradleak never downloads them (nor depends on torchvision). When any is missing,
:func:`available` is False and runs report ST-LPIPS only (:mod:`gradleak.metrics.st_lpips`).
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any

import torch

ALEXNET_WEIGHTS = "alexnet-owt-7be5be79.pth"  # torchvision's ImageNet AlexNet, as the lpips package loads it


def _cached_backbone() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_WEIGHTS


def available() -> bool:
    """Whether LPIPS can run here without downloading anything: the packages are present *and
    import* (PyPI's torchvision does not import beside a CPU-only torch build), and the backbone's
    weights are cached."""
    return (importlib.util.find_spec("lpips") is not None and importlib.util.find_spec("torchvision") is not None
            and _cached_backbone().is_file() and _imports())


@functools.lru_cache(maxsize=1)
def _imports() -> bool:
    try:
        import lpips  # noqa: F401
        import torchvision  # noqa: F401
    except Exception:  # a broken torchvision raises RuntimeError/ImportError/OSError at import
        return False
    return True


@functools.lru_cache(maxsize=1)
def _network() -> Any:
    import lpips  # the user's own install (with torchvision); weights from the hub cache

    return lpips.LPIPS(net="alex", verbose=False).eval()


def lpips_distances(reconstructions: torch.Tensor, targets: torch.Tensor) -> list[float]:
    """LPIPS (AlexNet, v0.1) of each reconstruction against its target, images in [0, 1]."""
    a, b = (t.detach().float().cpu() for t in (reconstructions, targets))
    a, b = (t.expand(-1, 3, -1, -1) if t.shape[1] == 1 else t for t in (a, b))
    with torch.no_grad():
        return [float(v) for v in _network()(a, b, normalize=True).flatten()]
