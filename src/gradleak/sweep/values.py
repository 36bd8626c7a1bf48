"""Checks of the values in a sweep config: each bad value is one line naming its key."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from gradleak.errors import GradleakError


def is_plain_name(name: str) -> bool:
    """Whether ``name`` is one folder name: no separator, not ``.``/``..``, no control characters.

    The sweep name becomes ``sweeps/<name>``; ``"../../../tmp/x"`` or ``"/etc"`` would write elsewhere.

    Example:
        >>> [is_plain_name(n) for n in ("dlg_defenses_small", "run 2", "../x", "a/b", "..", "/etc")]
        [True, True, False, False, False, False]
    """
    return (
        bool(name)
        and name not in (".", "..")
        and not any(c in name for c in "/\\:")
        and all(c.isprintable() for c in name)
        and Path(name).name == name
        and not Path(name).is_absolute()
    )


def refuse_unknown_keys(keys: Sequence[str], valid: Sequence[str], what: str, where: str) -> None:
    bad = [k for k in keys if k not in valid]
    if bad:
        raise GradleakError(
            f"{where}: unknown key{'s' if len(bad) > 1 else ''} {', '.join(map(repr, bad))} in {what}; "
            f"valid keys: {', '.join(valid)}"
        )


def as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def whole_numbers(value: Any, key: str, where: str, *, low: int) -> list[int]:
    out = []
    for v in as_list(value):
        if isinstance(v, bool) or not isinstance(v, int):
            raise GradleakError(f"{where}: {key} must be whole numbers (got {v!r})")
        if v < low:
            raise GradleakError(f"{where}: {key} must be >= {low} (got {v})")
        out.append(v)
    if not out:
        raise GradleakError(f"{where}: {key} is empty: give at least one value")
    return list(dict.fromkeys(out))


def strings(value: Any, key: str, where: str) -> list[str]:
    out = []
    for v in as_list(value):
        if not isinstance(v, str):
            raise GradleakError(f"{where}: {key} must be strings (got {v!r})")
        out.append(v.strip())
    if not out:
        raise GradleakError(f"{where}: {key} is empty: give at least one value")
    return list(dict.fromkeys(out))


def canonical_defenses(entry: Any, where: str) -> list[str]:
    """One grid ``defenses`` entry → the canonical spec list (``[]`` for none)."""
    from gradleak.defenses import parse_defenses

    specs = entry if isinstance(entry, list) else [entry]
    for spec in specs:
        if not isinstance(spec, str):
            raise GradleakError(f"{where}: a defenses entry must be a spec string or a list of them (got {spec!r})")
    specs = [s.strip() for s in specs if s.strip().lower() not in ("", "none")]
    return [d.name for d in parse_defenses(specs)]


def defense_label(specs: Sequence[str]) -> str:
    return "+".join(specs) if specs else "none"


def defense_entries(value: Any, key: str, where: str) -> list[list[str]]:
    raw = value if isinstance(value, list) else [value]
    if not raw:
        raise GradleakError(f"{where}: {key} is empty: give at least one entry (\"none\" = undefended)")
    out: list[list[str]] = []
    for entry in raw:
        specs = canonical_defenses(entry, where)
        if specs not in out:
            out.append(specs)
    return out


def typed_value(value: Any, default: Any, key: str, where: str, *, optional_int: bool = False) -> Any:
    """Check ``value`` against the type of a field's default."""
    if optional_int:
        if value is None or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        raise GradleakError(f"{where}: {key} must be a whole number (got {value!r})")
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise GradleakError(f"{where}: {key} must be true or false (got {value!r})")
    if isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise GradleakError(f"{where}: {key} must be a whole number (got {value!r})")
    if isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise GradleakError(f"{where}: {key} must be a number (got {value!r})")
    if isinstance(default, str):
        if isinstance(value, str):
            return value
        raise GradleakError(f"{where}: {key} must be a string (got {value!r})")
    return value


def dataclass_defaults(cls: type) -> dict[str, Any]:
    out = {}
    for f in fields(cls):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:  # type: ignore[misc]
            out[f.name] = f.default_factory()  # type: ignore[misc]
    return out

