"""What a sweep config expands to: the planned runs, with their grid position and stable ids."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep: what to execute (``config``) and where it sits in the grid (``axes``).

    ``kind`` is ``"attack"`` (``config`` holds :class:`~gradleak.experiment.RunConfig` fields)
    or ``"utility"`` (``config`` holds :class:`~gradleak.utility.UtilityConfig` fields).
    """

    run_id: str
    kind: str
    label: str
    config: dict[str, Any]
    axes: dict[str, Any]


@dataclass
class SweepPlan:
    name: str
    description: str
    success_psnr: float
    runs: list[PlannedRun]
    skipped: list[str] = field(default_factory=list)
    source: str = ""
    path: str | None = None

    @property
    def attack_runs(self) -> list[PlannedRun]:
        return [r for r in self.runs if r.kind == "attack"]

    @property
    def utility_runs(self) -> list[PlannedRun]:
        return [r for r in self.runs if r.kind == "utility"]

