"""A parsed sweep config → its runs: the grid's axes checked, counted, and expanded (attack runs
first, then utility runs), every run with its stable id."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from gradleak.errors import GradleakError
from gradleak.sweep.plan import PlannedRun, SweepPlan
from gradleak.sweep.run_ids import attack_identity, run_id_for
from gradleak.sweep.utility_axis import expand_utility
from gradleak.sweep.values import (
    dataclass_defaults,
    defense_entries,
    defense_label,
    is_plain_name,
    refuse_unknown_keys,
    strings,
    typed_value,
    whole_numbers,
)
from gradleak.sweep.weights_axis import weights_entries

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
DEFAULT_SUCCESS_PSNR = 30.0
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
    from gradleak.data import get_spec
    from gradleak.experiment import RunConfig
    from gradleak.models import MODELS, default_model
    from gradleak.scenarios import SCENARIOS

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
    defenses = defense_entries(grid.get("defenses", ["none"]), "grid.defenses", where)
    batch_sizes = whole_numbers(grid.get("batch_sizes", [1]), "grid.batch_sizes", where, low=1)
    indices = whole_numbers(grid.get("indices", [0]), "grid.indices", where, low=0)
    seeds = whole_numbers(grid.get("seeds", [1234]), "grid.seeds", where, low=0)
    local_steps = whole_numbers(grid.get("local_steps", [1]), "grid.local_steps", where, low=1)
    client_counts = whole_numbers(grid.get("clients", [0]), "grid.clients", where, low=0 if "clients" not in grid else 1)
    bin_counts = whole_numbers(grid.get("bins", [0]), "grid.bins", where, low=0 if "bins" not in grid else 2)
    weights = weights_entries(grid.get("weights", ["none"]), where)

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

    runs: list[PlannedRun] = []
    seen: set[str] = set()
    skipped: list[str] = []
    fitting_models: dict[str, list[str]] = {}
    for dataset in datasets:
        spec = get_spec(dataset)
        fitting = fitting_models.setdefault(dataset, [])
        for model in models:
            resolved = default_model(spec.channels, spec.image_size) if model == "default" else model
            model_spec = MODELS.get(resolved)
            if model_spec.channels is not None and (model_spec.channels, model_spec.image_size) != (spec.channels, spec.image_size):
                skipped.append(f"model {resolved} does not fit {dataset} ({spec.channels}x{spec.image_size}x{spec.image_size})")
                continue
            if resolved not in fitting:
                fitting.append(resolved)
    # Count before expanding: a product of axis lengths is instant, the expansion is not.
    scenario_axes = {"local_steps": local_steps, "clients": client_counts, "bins": bin_counts}

    def settings_of(scenario: str) -> int:  # the axes a scenario reads (uneven client splits are skipped later)
        count = 1
        for setting in SCENARIOS.get(scenario).run_settings:
            count *= len(scenario_axes.get(setting, [None]))
        return count

    per_model = len(attacks) * len(defenses) * len(batch_sizes) * len(indices) * len(seeds) * sum(
        settings_of(s) for s in scenarios
    )
    count = per_model * sum(len(f) for f in fitting_models.values()) * len(weights)
    utility = data.get("utility")
    if isinstance(utility, Mapping):
        trained = defense_entries(utility["defenses"], "utility.defenses", where) if "defenses" in utility else defenses
        seeds_trained = whole_numbers(utility.get("seeds", [0]), "utility.seeds", where, low=0)
        count += len(seeds_trained) * (len(trained) + ([] not in trained))  # + the undefended baseline
    if max_runs is not None and count > max_runs:
        axes = " x ".join(f"{n} {k}" for k, n in (
            ("datasets", len(datasets)), ("models", len(models)), ("attacks", len(attacks)),
            ("scenarios", len(scenarios)), ("defenses", len(defenses)), ("batch sizes", len(batch_sizes)),
            ("indices", len(indices)), ("seeds", len(seeds)), ("local steps", len(local_steps)),
        ) if n > 1) or "1"
        raise GradleakError(
            f"{where}: the grid has {count:,} runs ({axes}), more than the limit of {max_runs:,}: "
            f"shrink the grid, or pass --max-runs {count} to expand it anyway"
        )
    for dataset in datasets:
        spec = get_spec(dataset)
        fitting = fitting_models[dataset]
        for model, checkpoint, attack, scenario, specs, batch, start, seed, steps, clients, bins in itertools.product(
            fitting, weights, attacks, scenarios, defenses, batch_sizes, indices, seeds, local_steps, client_counts,
            bin_counts,
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
            config = {**run_defaults, **fixed, **per_attack.get(attack, {})}
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
            axes = {
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
            runs.append(PlannedRun(run_id=run_id, kind="attack", label=label, config=config, axes=axes))

    if "utility" in data:
        runs.extend(expand_utility(dict(data["utility"]), defenses, fixed, where, seen))
    if not runs:
        raise GradleakError(f"{where}: the grid expands to no runs ({'; '.join(skipped) or 'empty grid'})")
    return SweepPlan(
        name=name.strip(), description=description, success_psnr=float(success), runs=runs, skipped=skipped
    )


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

