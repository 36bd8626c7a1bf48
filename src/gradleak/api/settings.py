"""Keyword settings for a component, checked against the fields it declares (a dataclass)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from gradleak.errors import GradleakError


def declared_settings(component: type) -> list[str]:
    """The settings a dataclass component declares (its init fields)."""
    if not dataclasses.is_dataclass(component):
        return []
    return [f.name for f in dataclasses.fields(component) if f.init and f.name != "name"]


def build_component(component: type, settings: Mapping[str, Any], *, kind: str, name: str) -> Any:
    """``component(**settings)``, refusing unknown settings with the valid ones listed."""
    valid = declared_settings(component)
    unknown = [k for k in settings if k not in valid]
    if unknown:
        raise GradleakError(
            f"{kind} {name!r} has no setting {unknown[0]!r}: its settings are {', '.join(valid) or 'none'}"
        )
    try:
        return component(**settings)
    except TypeError as error:
        raise GradleakError(f"{kind} {name!r}: {error}") from None
