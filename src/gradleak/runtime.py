"""Where and how tensors are computed: the device, the seed, the CPU threads."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from gradleak.errors import GradleakError


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` is CUDA when present, else the CPU; a CUDA request without CUDA is one clear error.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if isinstance(name, torch.device):
        name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise GradleakError(f"--device {name} was asked for but CUDA is not available here: use --device cpu (or auto)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise GradleakError(f"unknown --device {name!r}: use auto, cpu, cuda or cuda:N") from None


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) from one number."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run a block with ``count`` torch CPU threads (``None``: as they are), and restore them after.

    Example:
        >>> before = torch.get_num_threads()
        >>> with torch_threads(1):
        ...     torch.get_num_threads()
        1
        >>> torch.get_num_threads() == before
        True
    """
    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
