"""The grid's ``weights`` axis: checkpoints read (safely) and pinned by sha256 when the plan is made."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradleak.errors import GradleakError
from gradleak.sweep.values import strings


@dataclass(frozen=True)
class PinnedWeights:
    """One grid.weights checkpoint, read and pinned when the plan is made."""

    label: str  # the file name, as the report shows it
    path: str  # absolute
    sha256: str
    architecture: str | None
    channels: int | None
    image_size: int | None

    def misfit(self, model: str, spec: Any) -> str | None:
        """Why this checkpoint cannot serve ``model`` on dataset ``spec`` (None: it fits, as far as its
        metadata says; the run itself checks every tensor's shape)."""
        from gradleak.models import MODELS

        if self.architecture is not None and self.architecture != model:
            return f"weights {self.label} ({self.architecture}) do not fit model {model} on {spec.name}"
        size_matters = MODELS.get(model).image_size is not None
        if self.channels is not None and self.image_size is not None and (
            self.channels != spec.channels or (size_matters and self.image_size != spec.image_size)
        ):
            return (f"weights {self.label} ({self.channels}x{self.image_size}x{self.image_size}) do not fit "
                    f"{spec.name} ({spec.channels}x{spec.image_size}x{spec.image_size})")
        return None


def weights_entries(value: Any, where: str) -> list[PinnedWeights | None]:
    """grid.weights → None (initialisation) or a pinned checkpoint per entry."""
    from gradleak.models.checkpoint import read_checkpoint

    out: list[PinnedWeights | None] = []
    for entry in strings(value, "grid.weights", where):
        if entry.lower() in ("", "none", "init"):
            item = None
        else:
            try:
                _, info = read_checkpoint(Path(entry).expanduser())
            except GradleakError as error:
                raise GradleakError(f"{where}: grid.weights: {error}") from None
            item = PinnedWeights(Path(info.path).name, info.path, info.sha256, info.architecture, info.channels,
                            info.image_size)
        if item not in out:
            out.append(item)
    return out

