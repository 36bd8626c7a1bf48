"""A parsed sweep config → its runs: the grid's axes checked, counted, and expanded (attack runs
first, then utility runs), every run with its stable id."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from gradleak.errors import GradleakError
from gradleak.sweep.axes import GridAxes, fitting_models, read_grid, read_header
from gradleak.sweep.plan import PlannedRun, SweepPlan
from gradleak.sweep.run_ids import attack_identity, run_id_for
from gradleak.sweep.utility_axis import expand_utility
from gradleak.sweep.values import (
    dataclass_defaults,
    defense_entries,
    defense_label,
    refuse_unknown_keys,
    typed_value,
    whole_numbers,
)

GRID_KEYS = (
    "datasets", "models", "attacks", "scenarios", "defenses", "batch_sizes", "indices", "seeds", "local_steps",
    "clients", "bins", "weights",
)
SWEEP_KEYS = ("name", "description", "success_psnr")
TABLES = ("sweep", "grid", "run", "per_attack", "utility")
# RunConfig fields a sweep sets per run (from the grid) or never (outputs): not allowed in [run].
RUN_FORBIDDEN = {
    "dataset", "indices", "images", "labels", "model", "attack", "scenario", "defenses", "seed",
    "local_steps", "clients", "bins", "out", "overwrite", "quiet", "weights", "weights_sha256",
}


SWEEP_RUN_DEFAULTS: dict[str, Any] = {"device": "cpu", "download": False, "save_final": True}
DEFAULT_MAX_RUNS = 100_000  # runs a grid may expand to unless raised (gradleak sweep --max-runs)


def valid_run_keys() -> list[str]:
    from gradleak.experiment import RunConfig

    return [f.name for f in fields(RunConfig) if f.name not in RUN_FORBIDDEN]


def expand(data: Mapping[str, Any], *, default_name: str = "sweep", where: str = "config",
           max_runs: int | None = DEFAULT_MAX_RUNS) -> SweepPlan:
    """Validate a parsed config and expand it into runs (attack runs first, then utility).

    The grid is counted first; more than ``max_runs`` runs (None: no limit) is a GradleakError
    that gives the count and how to raise the limit, before anything is expanded.
    """
    from gradleak.attacks import ATTACKS
    from gradleak.experiment import RunConfig

    if not isinstance(data, Mapping):
        raise GradleakError(f"{where}: expected TOML tables {', '.join(TABLES)}")
    refuse_unknown_keys(list(data), TABLES, "the config (tables)", where)
    for table in data:
        if not isinstance(data[table], Mapping):
            raise GradleakError(f"{where}: [{table}] must be a table (write it as [{table}] with keys under it)")
    sweep = dict(data.get("sweep", {}))
    grid = dict(data.get("grid", {}))
    run = dict(data.get("run", {}))
    refuse_unknown_keys(list(sweep), SWEEP_KEYS, "[sweep]", where)
    refuse_unknown_keys(list(grid), GRID_KEYS, "[grid]", where)
    refuse_unknown_keys(list(run), valid_run_keys(), "[run]", where)
    header = read_header(sweep, default_name, where)
    axes = read_grid(grid, where)

    run_defaults = dataclass_defaults(RunConfig)
    fixed: dict[str, Any] = dict(SWEEP_RUN_DEFAULTS)
    fixed.update(run_settings(run, "run", run_defaults, where))
    per_attack: dict[str, dict[str, Any]] = {}
    for attack_name, table in dict(data.get("per_attack", {})).items():
        ATTACKS.get(attack_name)
        if not isinstance(table, Mapping):
            raise GradleakError(f"{where}: [per_attack.{attack_name}] must be a table of [run] settings")
        refuse_unknown_keys(list(table), valid_run_keys(), f"[per_attack.{attack_name}]", where)
        per_attack[attack_name] = run_settings(table, f"per_attack.{attack_name}", run_defaults, where)

    seen: set[str] = set()
    skipped: list[str] = []
    fitting = fitting_models(axes, skipped)
    # Count before expanding: a product of axis lengths is instant, the expansion is not.
    count = _count_runs(axes, fitting, data.get("utility"), where)
    if max_runs is not None and count > max_runs:
        sizes = " x ".join(f"{n} {k}" for k, n in (
            ("datasets", len(axes.datasets)), ("models", len(axes.models)), ("attacks", len(axes.attacks)),
            ("scenarios", len(axes.scenarios)), ("defenses", len(axes.defenses)), ("batch sizes", len(axes.batch_sizes)),
            ("indices", len(axes.indices)), ("seeds", len(axes.seeds)), ("local steps", len(axes.local_steps)),
        ) if n > 1) or "1"
        raise GradleakError(
            f"{where}: the grid has {count:,} runs ({sizes}), more than the limit of {max_runs:,}: "
            f"shrink the grid, or pass --max-runs {count} to expand it anyway"
        )
    settings = {**run_defaults, **fixed}
    runs = _attack_runs(axes, fitting, settings, per_attack, run_defaults, seen, skipped)
    if "utility" in data:
        runs.extend(expand_utility(dict(data["utility"]), axes.defenses, fixed, where, seen))
    if not runs:
        raise GradleakError(f"{where}: the grid expands to no runs ({'; '.join(skipped) or 'empty grid'})")
    return SweepPlan(
        name=header.name, description=header.description, success_psnr=header.success_psnr, runs=runs, skipped=skipped
    )


def _count_runs(axes: GridAxes, fitting: Mapping[str, list[str]], utility: Any, where: str) -> int:
    """How many runs the grid (and the utility table) expands to, at most (uneven client splits
    and misfitting checkpoints are skipped later)."""
    from gradleak.scenarios import SCENARIOS

    scenario_axes = {"local_steps": axes.local_steps, "clients": axes.clients, "bins": axes.bins}

    def settings_of(scenario: str) -> int:  # the axes a scenario reads
        count = 1
        for setting in SCENARIOS.get(scenario).run_settings:
            count *= len(scenario_axes.get(setting, [None]))
        return count

    per_model = len(axes.attacks) * len(axes.defenses) * len(axes.batch_sizes) * len(axes.indices) * len(axes.seeds) * sum(
        settings_of(s) for s in axes.scenarios
    )
    count = per_model * sum(len(f) for f in fitting.values()) * len(axes.weights)
    if isinstance(utility, Mapping):
        trained = defense_entries(utility["defenses"], "utility.defenses", where) if "defenses" in utility else axes.defenses
        seeds_trained = whole_numbers(utility.get("seeds", [0]), "utility.seeds", where, low=0)
        count += len(seeds_trained) * (len(trained) + ([] not in trained))  # + the undefended baseline
    return count


def _attack_runs(
    axes: GridAxes, fitting: Mapping[str, list[str]], settings: Mapping[str, Any],
    per_attack: Mapping[str, Mapping[str, Any]], run_defaults: Mapping[str, Any], seen: set[str], skipped: list[str],
) -> list[PlannedRun]:
    """One run per point of the grid that fits (what does not fit is added to ``skipped``), each
    with its stable id; a point whose id is already in ``seen`` is the same run and is left out."""
    from gradleak.data import get_spec
    from gradleak.scenarios import SCENARIOS

    runs: list[PlannedRun] = []
    for dataset in axes.datasets:
        spec = get_spec(dataset)
        for model, checkpoint, attack, scenario, specs, batch, start, seed, steps, clients, bins in itertools.product(
            fitting[dataset], axes.weights, axes.attacks, axes.scenarios, axes.defenses, axes.batch_sizes, axes.indices,
            axes.seeds, axes.local_steps, axes.clients, axes.bins,
        ):
            if checkpoint is not None:
                reason = checkpoint.misfit(model, spec)
                if reason:
                    if reason not in skipped:
                        skipped.append(reason)
                    continue
            reads = SCENARIOS.get(scenario).run_settings
            steps = steps if "local_steps" in reads else 1
            clients = (clients or None) if "clients" in reads else None
            bins = (bins or None) if "bins" in reads else None
            if clients is not None and (clients > batch or batch % clients):
                why = f"{scenario} with {clients} clients: a batch of {batch} cannot be split evenly among them"
                if why not in skipped:
                    skipped.append(why)
                continue
            config = {**settings, **per_attack.get(attack, {})}
            config.update(
                dataset=dataset,
                indices=list(range(start, start + batch)),
                model=model,
                attack=attack,
                scenario=scenario,
                defenses=list(specs),
                seed=seed,
                local_steps=steps,
                clients=clients,
                bins=bins,
            )
            if "local_lr" not in reads:
                config["local_lr"] = run_defaults["local_lr"]
            if checkpoint is not None:
                config.update(weights=checkpoint.path, weights_sha256=checkpoint.sha256)
            run_id = run_id_for("attack", attack_identity(config))
            if run_id in seen:
                continue
            seen.add(run_id)
            point = {
                "dataset": dataset,
                "model": model,
                "attack": attack,
                "scenario": scenario_label(scenario, clients=clients, bins=bins),
                "defense": defense_label(specs),
                "batch_size": batch,
                "index": start,
                "seed": seed,
                "local_steps": steps,
                "clients": clients,
                "bins": bins,
                "weights": checkpoint.label if checkpoint is not None else "init",
            }
            label = (
                f"{dataset}/{model}/{attack}/{scenario_label(scenario, clients=clients, bins=bins)}"
                f"{f'-E{steps}' if 'local_steps' in reads else ''}/"
                f"{defense_label(specs)}/b{batch}/i{start}/s{seed}"
                + (f"/w-{checkpoint.label}" if checkpoint is not None else "")
            )
            runs.append(PlannedRun(run_id=run_id, kind="attack", label=label, config=config, axes=point))
    return runs


def scenario_label(scenario: str, *, clients: int | None = None, bins: int | None = None) -> str:
    """The scenario axis value, as the scenario declares it (``fedsgd``, ``secagg:clients=4``,
    ``imprint:bins=256``, ``imprint:bins=256,clients=4``)."""
    from gradleak.scenarios import SCENARIOS

    return SCENARIOS.get(scenario).label({"clients": clients, "bins": bins})


def run_settings(table: Mapping[str, Any], name: str, defaults: Mapping[str, Any], where: str) -> dict[str, Any]:
    out = {}
    for key, value in table.items():
        out[key] = typed_value(value, defaults[key], f"{name}.{key}", where, optional_int=key == "num_classes")
    if "iterations" in out and out["iterations"] < 1:
        raise GradleakError(f"{where}: {name}.iterations must be at least 1 (got {out['iterations']})")
    return out

