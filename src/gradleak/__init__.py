"""gradleak: show, measure and defend against gradient leakage in federated learning.

The public API (see the README's "Python" section) is importable from here; it is loaded on
first use, so ``import gradleak`` stays cheap (no torch, transformers or dask until needed).

Example:
    >>> import gradleak
    >>> callable(gradleak.reconstruct)
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gradleak.version import __version__

from gradleak.errors import GradleakError

_API = {
    "client_update", "defend", "reconstruct", "score", "save_update", "load_update", "available",
    "register_attack", "register_defense", "register_model", "register_scenario", "register_dataset",
    "register_metric",
}
_TYPES = {"SharedUpdate", "AttackResult", "NoiseContribution", "StepReport"}
_ATTACK_BASE = {"BaseAttack", "AttackContext"}  # what a new attack builds on

__all__ = ["GradleakError", "__version__", *sorted(_API), *sorted(_TYPES), *sorted(_ATTACK_BASE)]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from gradleak.api import (  # noqa: F401
        available, client_update, defend, load_update, reconstruct, register_attack, register_dataset,
        register_defense, register_metric, register_model, register_scenario, save_update, score,
    )
    from gradleak.attacks.base import AttackContext, BaseAttack  # noqa: F401
    from gradleak.types import AttackResult, NoiseContribution, SharedUpdate, StepReport  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _API:
        import gradleak.api as api

        return getattr(api, name)
    if name in _TYPES:
        import gradleak.types as types

        return getattr(types, name)
    if name in _ATTACK_BASE:
        import gradleak.attacks.base as attack_base

        return getattr(attack_base, name)
    raise AttributeError(f"module 'gradleak' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
