"""The ``[sweep]`` header and the ``[grid]`` axes of a sweep config, read and checked (every name
must be registered, every number in range), and the models that fit each dataset."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gradleak.errors import GradleakError
from gradleak.sweep.values import defense_entries, is_plain_name, strings, whole_numbers
from gradleak.sweep.weights_axis import PinnedWeights, weights_entries

DEFAULT_SUCCESS_PSNR = 30.0


@dataclass(frozen=True)
class SweepHeader:
    name: str
    description: str
    success_psnr: float


@dataclass(frozen=True)
class GridAxes:
    """The values of each ``[grid]`` axis, checked; a run is one value of each."""

    datasets: list[str]
    models: list[str]  # "default": the dataset's default model
    attacks: list[str]
    scenarios: list[str]
    defenses: list[list[str]]  # canonical spec lists; [] = undefended
    batch_sizes: list[int]
    indices: list[int]
    seeds: list[int]
    local_steps: list[int]
    clients: list[int]  # 0: the scenario's default
    bins: list[int]  # 0: the scenario's default
    weights: list[PinnedWeights | None]  # None: the model at initialisation


def read_header(sweep: Mapping[str, Any], default_name: str, where: str) -> SweepHeader:
    """The ``[sweep]`` table: a plain folder name, a description, the success threshold in dB."""
    name = sweep.get("name", default_name)
    if not isinstance(name, str) or not name.strip():
        raise GradleakError(f"{where}: sweep.name must be a non-empty string")
    if not is_plain_name(name.strip()):
        raise GradleakError(
            f"{where}: sweep.name {name.strip()!r} is not a plain folder name (the sweep goes to sweeps/<name>): "
            "use letters, digits, '-', '_', '.' or spaces, without '/', '\\' or '..'"
        )
    description = sweep.get("description", "")
    if not isinstance(description, str):
        raise GradleakError(f"{where}: sweep.description must be a string")
    success = sweep.get("success_psnr", DEFAULT_SUCCESS_PSNR)
    if isinstance(success, bool) or not isinstance(success, (int, float)):
        raise GradleakError(f"{where}: sweep.success_psnr must be a number of dB (got {success!r})")
    return SweepHeader(name=name.strip(), description=description, success_psnr=float(success))


def read_grid(grid: Mapping[str, Any], where: str) -> GridAxes:
    """The ``[grid]`` table's axes, each checked against its registry or range."""
    from gradleak.attacks import ATTACKS
    from gradleak.data import get_spec
    from gradleak.models import MODELS
    from gradleak.scenarios import SCENARIOS

    if "datasets" not in grid:
        raise GradleakError(f"{where}: [grid] needs datasets, e.g. datasets = [\"mnist\"]")
    datasets = [get_spec(d).name for d in strings(grid["datasets"], "grid.datasets", where)]
    models = strings(grid.get("models", ["default"]), "grid.models", where)
    for m in models:
        if m != "default":
            MODELS.get(m)
    attacks = strings(grid.get("attacks", ["idlg"]), "grid.attacks", where)
    for a in attacks:
        ATTACKS.get(a)
    scenarios = strings(grid.get("scenarios", ["fedsgd"]), "grid.scenarios", where)
    for s in scenarios:
        SCENARIOS.get(s)
    return GridAxes(
        datasets=datasets,
        models=models,
        attacks=attacks,
        scenarios=scenarios,
        defenses=defense_entries(grid.get("defenses", ["none"]), "grid.defenses", where),
        batch_sizes=whole_numbers(grid.get("batch_sizes", [1]), "grid.batch_sizes", where, low=1),
        indices=whole_numbers(grid.get("indices", [0]), "grid.indices", where, low=0),
        seeds=whole_numbers(grid.get("seeds", [1234]), "grid.seeds", where, low=0),
        local_steps=whole_numbers(grid.get("local_steps", [1]), "grid.local_steps", where, low=1),
        clients=whole_numbers(grid.get("clients", [0]), "grid.clients", where, low=0 if "clients" not in grid else 1),
        bins=whole_numbers(grid.get("bins", [0]), "grid.bins", where, low=0 if "bins" not in grid else 2),
        weights=weights_entries(grid.get("weights", ["none"]), where),
    )


def fitting_models(axes: GridAxes, skipped: list[str]) -> dict[str, list[str]]:
    """Per dataset, the grid's models (``default`` resolved) whose input fits it; the others are
    added to ``skipped`` with the reason."""
    from gradleak.data import get_spec
    from gradleak.models import MODELS, default_model

    found: dict[str, list[str]] = {}
    for dataset in axes.datasets:
        spec = get_spec(dataset)
        fitting = found.setdefault(dataset, [])
        for model in axes.models:
            resolved = default_model(spec.channels, spec.image_size) if model == "default" else model
            model_spec = MODELS.get(resolved)
            if model_spec.channels is not None and (model_spec.channels, model_spec.image_size) != (spec.channels, spec.image_size):
                skipped.append(f"model {resolved} does not fit {dataset} ({spec.channels}x{spec.image_size}x{spec.image_size})")
                continue
            if resolved not in fitting:
                fitting.append(resolved)
    return found
