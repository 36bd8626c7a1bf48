"""How much memory a step may take: estimate before allocating, refuse with one line.

A hostile or careless input (a checkpoint claiming 10⁹ classes, ``--bins 10⁹``, a 1×2,000,000
image) must not ask the allocator for terabytes or fill the machine until the kernel's OOM killer
ends the process. Callers estimate the bytes a step needs and call :func:`require_memory` first.

The budget is the memory the system reports available (``MemAvailable``), lowered to what is left
under the process's address-space limit (``ulimit -v``) when one is set. ``GRADLEAK_MAX_MEMORY``
(bytes, or with a K/M/G/T suffix) caps it further, e.g. on a shared machine.

Example:
    >>> require_memory(1024, what="a tiny tensor", fix="nothing to fix")
    >>> format_bytes(3 * 2**30)
    '3.0 GiB'
"""

from __future__ import annotations

import os
import resource

from gradleak.errors import GradleakError

ENV_LIMIT = "GRADLEAK_MAX_MEMORY"
_SUFFIXES = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def format_bytes(count: float) -> str:
    """``1.5 GiB``, ``512.0 MiB``, ``980 B``."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{int(count)} B"


def _parse_limit(text: str) -> int:
    raw = text.strip().upper().removesuffix("B").removesuffix("I")
    suffix = raw[-1:] if raw[-1:] in _SUFFIXES and raw[-1:] else ""
    try:
        value = float(raw[: len(raw) - len(suffix)])
    except ValueError:
        raise GradleakError(f"{ENV_LIMIT}={text!r} is not a size: give bytes or e.g. 8G") from None
    if not value > 0:
        raise GradleakError(f"{ENV_LIMIT}={text!r} must be positive: give bytes or e.g. 8G")
    return int(value * _SUFFIXES[suffix])


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _address_space_left() -> int | None:
    """Bytes left under ``RLIMIT_AS`` (None when unlimited or unknown)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        with open("/proc/self/status") as f:
            used = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    except (OSError, StopIteration, ValueError):
        used = 0
    return max(0, soft - used)


def available_memory() -> int:
    """The bytes a step may allocate now (see the module docstring)."""
    candidates = [c for c in (_meminfo_available(), _address_space_left()) if c is not None]
    if not candidates:
        pages, page = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        candidates.append(pages * page)
    limit = os.environ.get(ENV_LIMIT)
    if limit:
        candidates.append(_parse_limit(limit))
    return min(candidates)


def require_memory(needed: float, *, what: str, fix: str) -> None:
    """Refuse (one line: the estimate, the limit, the fix) when ``needed`` bytes do not fit."""
    budget = available_memory()
    if needed > budget:
        raise GradleakError(
            f"{what} needs about {format_bytes(needed)} of memory but only {format_bytes(budget)} is available: {fix}"
        )


__all__ = ["ENV_LIMIT", "available_memory", "format_bytes", "require_memory"]
