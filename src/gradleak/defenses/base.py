"""The defense protocol, the ``DEFENSES`` registry and the ``--defense`` spec parser.

A defense is applied by the client to what it shares (a :class:`~gradleak.types.SharedUpdate`)
before the server, and so the attack, sees it. Specs are short strings, repeatable on the command
line and applied in the order given::

    gradleak ... --defense gaussian:1e-3 --defense prune:0.3

Kinds and the meaning of their number:

* ``gaussian:VARIANCE`` -- add i.i.d. N(0, VARIANCE) noise. The number is the **variance**, as in
  the DLG paper (Zhu et al., 2019, which sweeps variances 1e-4 .. 1e-1); std = sqrt(VARIANCE).
* ``laplacian:SCALE`` -- add i.i.d. Laplace(0, SCALE) noise. The number is the **scale b**
  (mean absolute deviation b, variance 2 b^2).
* ``prune:RATIO`` -- per parameter tensor, zero the ``ceil(RATIO * numel)`` entries of smallest
  magnitude (DLG's "gradient pruning", 1% .. 70% in the paper).
* ``fp16`` -- round to half precision; the server sees the float32 of the float16 value.
* ``int8`` -- per-tensor symmetric int8 quantisation, dequantised back to float32.
* ``dpsgd:clip=C,sigma=S[,delta=D]`` -- DP-SGD; not a post-hoc transform: the client computes
  its gradient with :meth:`gradleak.defenses.DPSGD.private_gradient`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from gradleak.errors import GradleakError
from gradleak.registry import Registry
from gradleak.types import SharedUpdate


@runtime_checkable
class Defense(Protocol):
    """A transform the client applies to its :class:`SharedUpdate` before sharing it.

    ``name`` is the canonical spec string (``parse_defense(d.name)`` rebuilds an equal defense)
    and is what :meth:`SharedUpdate.replace_tensors` records in ``update.defenses``.
    ``apply`` never mutates the update's tensors; random defenses draw from ``generator`` when
    one is given, so that a seeded generator makes them reproducible.
    """

    @property
    def name(self) -> str: ...

    def apply(
        self, update: SharedUpdate, *, generator: torch.Generator | None = None
    ) -> SharedUpdate: ...


class SpecError(ValueError):
    """Raised by a kind's builder for a bad argument; :func:`parse_defense` adds the context."""


@dataclass(frozen=True)
class DefenseKind:
    """A registry entry: how to build one kind of defense from the text after ``kind:``.

    Attributes:
        name: the kind, the text before ``:`` in a spec.
        form: the expected spec form, e.g. ``"gaussian:VARIANCE"``.
        example: a valid spec, e.g. ``"gaussian:1e-3"``.
        summary: one line for ``--defense`` help.
        build: ``build(arg)`` with ``arg`` the text after ``:`` (``None`` when there is no
            ``:``); raises :class:`SpecError` with a short reason on a bad argument.
    """

    name: str
    form: str
    example: str
    summary: str
    build: Callable[[str | None], Defense]


DEFENSES: Registry[DefenseKind] = Registry("defense")


def parse_number(
    arg: str | None, what: str, *, low: float, high: float = math.inf, low_open: bool = False
) -> float:
    """Parse a finite float in ``[low, high]`` (``(low, high]`` with ``low_open``) for a builder."""
    if arg is None or not arg.strip():
        raise SpecError(f"missing the {what}")
    try:
        value = float(arg)
    except ValueError:
        raise SpecError(f"the {what} {arg.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise SpecError(f"the {what} must be finite (got {arg.strip()})")
    too_low = value <= low if low_open else value < low
    if too_low or value > high:
        if math.isfinite(high):
            bound = f"in {'(' if low_open else '['}{low:g}, {high:g}]"
        else:
            bound = f"{'>' if low_open else '>='} {low:g}"
        raise SpecError(f"the {what} must be {bound} (got {value:g})")
    return value


def no_argument(arg: str | None, kind: str) -> None:
    """For kinds that take no value (``fp16``, ``int8``)."""
    if arg is not None:
        raise SpecError(f"{kind} takes no value")


def _kinds_text() -> str:
    return ", ".join(DEFENSES.get(name).form for name in DEFENSES.names())


def defense_help() -> str:
    """Help text for a repeatable ``--defense`` option, listing every registered kind."""
    parts = [f"{kind.form}: {kind.summary}" for kind in (DEFENSES.get(n) for n in DEFENSES)]
    return (
        "client-side defense applied to the shared update, repeatable, applied in order "
        "(e.g. --defense gaussian:1e-3 --defense prune:0.3). " + "; ".join(parts)
    )


def parse_defense(spec: str) -> Defense:
    """Build one defense from its spec string, e.g. ``"gaussian:1e-3"`` or ``"fp16"``.

    Raises:
        GradleakError: one line naming the spec, what is wrong, the expected form and the
            registered kinds.

    Example:
        >>> parse_defense("gaussian:1e-3").name
        'gaussian:0.001'
        >>> parse_defense("prune:1.5")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        gradleak.errors.GradleakError: bad defense 'prune:1.5': the ratio must be in [0, 1] ...
    """
    text = str(spec).strip()
    kind_name, sep, arg = text.partition(":")
    kind_name = kind_name.strip().lower()
    if kind_name not in DEFENSES:
        raise GradleakError(
            f"bad defense {spec!r}: unknown kind {kind_name!r}; choose one of "
            f"{', '.join(DEFENSES.names())} (forms: {_kinds_text()})"
        )
    kind = DEFENSES.get(kind_name)
    try:
        return kind.build(arg if sep else None)
    except SpecError as error:
        raise GradleakError(
            f"bad defense {spec!r}: {error}; expected {kind.form}, e.g. {kind.example} "
            f"(kinds: {_kinds_text()})"
        ) from None


def parse_defenses(specs: Sequence[str]) -> list[Defense]:
    """Parse several specs (in order). At most one ``dpsgd`` is allowed.

    Example:
        >>> [d.name for d in parse_defenses(["gaussian:1e-3", "prune:0.3"])]
        ['gaussian:0.001', 'prune:0.3']
    """
    if isinstance(specs, str):  # a lone string would otherwise be parsed character by character
        specs = [specs]
    defenses = [parse_defense(spec) for spec in specs]
    dp = [d.name for d in defenses if d.name.startswith("dpsgd:")]
    if len(dp) > 1:
        raise GradleakError(
            f"at most one dpsgd defense may be given (got {len(dp)}: {', '.join(dp)}): "
            "keep a single --defense dpsgd:clip=C,sigma=S"
        )
    return defenses


def apply_defenses(
    update: SharedUpdate,
    defenses: Sequence[Defense],
    *,
    generator: torch.Generator | None = None,
) -> SharedUpdate:
    """Apply ``defenses`` in order; ``update.defenses`` of the result records their names.

    The input update is left untouched. A :class:`~gradleak.defenses.DPSGD` in the list raises
    (it acts at gradient time): take it out first, e.g. with
    :func:`~gradleak.defenses.split_dpsgd`.
    """
    for defense in defenses:
        update = defense.apply(update, generator=generator)
    return update
