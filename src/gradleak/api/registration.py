"""Registering components from code outside the package (plugins).

Each registry refuses a name that is taken and lists the valid names in its errors; a registered
component is usable everywhere a built-in one is: the Python API, ``gradleak run`` (after
``--plugin module``), sweeps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from gradleak.errors import GradleakError


def register_attack(name: str, attack: type) -> type:
    """Register an attack class: usually a dataclass subclassing :class:`gradleak.BaseAttack`
    (``name``, ``check(update, model)`` and ``reconstruct(model, update, context)``; the base's
    ``run`` does the rest), or any class with ``name``, ``check`` and its own
    ``run(model, update, *, generator=None, observer=None) -> AttackResult``. Returns it, so it
    also works as ``@register_attack("mine")``-style helper via ``functools.partial``."""
    from gradleak.attacks import ATTACKS

    for method in ("check", "run"):
        if not callable(getattr(attack, method, None)):
            raise GradleakError(f"attack {name!r} has no {method}() method: see 'Extending gradleak' in the README")
    ATTACKS.register(name, attack)
    return attack


def register_defense(
    name: str, build: Callable[[str | None], Any], *, form: str | None = None, example: str | None = None, summary: str = ""
) -> None:
    """Register a defense kind: ``build(arg)`` makes the defense from the text after ``name:``
    (``None`` when the spec has no ``:``) and raises ``gradleak.defenses.base.SpecError`` on a
    bad argument. The defense has ``name`` (its canonical spec), ``apply(update, *, generator)``
    and, for noise-aware attacks, ``noise_contribution(update)``."""
    from gradleak.defenses.base import DEFENSES, DefenseKind

    DEFENSES.register(name, DefenseKind(name=name, form=form or name, example=example or name, summary=summary, build=build))


def register_model(
    name: str,
    factory: Callable[[int, int, int], nn.Module],
    *,
    description: str = "",
    channels: int | None = None,
    image_size: int | None = None,
) -> None:
    """Register a model: ``factory(channels, image_size, num_classes)`` builds it (the caller seeds
    torch first); ``channels``/``image_size`` fix its input shape (``None``: any)."""
    from gradleak.models import MODELS, ModelSpec

    MODELS.register(name, ModelSpec(name, description or name, factory, channels, image_size, uniform_init=False))


def register_scenario(name: str, scenario: type) -> type:
    """Register a scenario class: a dataclass with ``defenses`` and ``generator`` fields and
    ``share(model, images, labels) -> SharedUpdate``."""
    from gradleak.scenarios import SCENARIOS

    if not callable(getattr(scenario, "share", None)):
        raise GradleakError(f"scenario {name!r} has no share() method: see 'Extending gradleak' in the README")
    SCENARIOS.register(name, scenario)
    return scenario


def register_dataset(spec: Any, backend: Any, *, sizes: dict[str, int] | None = None) -> None:
    """Register a dataset: a :class:`gradleak.data.DatasetSpec` and a backend (see
    :class:`gradleak.data.backends.Backend`: ``is_local``, ``prepare``, ``count``, ``read``);
    ``sizes`` gives each split's published size (to refuse an impossible index early)."""
    from gradleak.data.backends import BACKENDS
    from gradleak.data.specs import DATASETS, PUBLISHED_SIZES

    if spec.name in BACKENDS:
        raise GradleakError(f"dataset {spec.name!r} is already registered")
    DATASETS.register(spec.name, spec)
    BACKENDS[spec.name] = backend
    if sizes:
        PUBLISHED_SIZES[spec.name] = dict(sizes)


def register_metric(
    name: str, function: Callable[[Any, Any], float], *, higher_is_better: bool = True, summary: str = ""
) -> None:
    """Register a per-image metric ``function(reconstruction, target) -> float`` (each a (C, H, W)
    tensor in [0, 1]); every scored run then reports it under ``per_image[i]["extra"][name]``."""
    from gradleak.metrics import METRICS, MetricSpec

    METRICS.register(name, MetricSpec(name, function, higher_is_better, summary))


def available(kind: str) -> list[str]:
    """The registered names of one kind: ``attack``, ``defense``, ``model``, ``scenario``, ``dataset``, ``metric``.

    Example:
        >>> "auto" in available("attack") and "fedsgd" in available("scenario")
        True
    """
    from gradleak.attacks import ATTACKS
    from gradleak.data import DATASETS
    from gradleak.defenses import DEFENSES
    from gradleak.metrics import METRICS
    from gradleak.models import MODELS
    from gradleak.scenarios import SCENARIOS

    registries = {"attack": ATTACKS, "defense": DEFENSES, "model": MODELS, "scenario": SCENARIOS,
                  "dataset": DATASETS, "metric": METRICS}
    if kind not in registries:
        raise GradleakError(f"unknown kind {kind!r}: choose one of {', '.join(registries)}")
    return registries[kind].names()
