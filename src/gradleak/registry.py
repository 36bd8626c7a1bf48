"""Named registries (datasets, models, attacks, defenses) that refuse duplicates and list choices."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from gradleak.errors import GradleakError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name → object mapping with helpful errors; a name can be registered once.

    Example:
        >>> r: Registry[int] = Registry("model")
        >>> r.register("lenet", 1)
        >>> r.get("lenet")
        1
        >>> r.get("vgg")
        Traceback (most recent call last):
        ...
        gradleak.errors.GradleakError: unknown model 'vgg': choose one of lenet
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T) -> None:
        if name in self._items:
            raise GradleakError(
                f"{self.kind} {name!r} is already registered: choose another name (taken: {', '.join(self.names())})"
            )
        self._items[name] = item

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise GradleakError(
                f"unknown {self.kind} {name!r}: choose one of {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)
