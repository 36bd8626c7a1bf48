"""The sweep's ``[utility]`` table: test accuracy when training under each defense."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from gradleak.errors import GradleakError
from gradleak.sweep.plan import PlannedRun
from gradleak.sweep.run_ids import run_id_for
from gradleak.sweep.values import dataclass_defaults, defense_entries, defense_label, refuse_unknown_keys, typed_value, whole_numbers

UTILITY_KEYS = (
    "dataset", "model", "defenses", "epochs", "batch_size", "lr", "momentum", "seeds", "train_size", "test_size",
    "data_root", "download", "device",
)


def expand_utility(
    table: dict[str, Any], grid_defenses: list[list[str]], fixed: Mapping[str, Any], where: str, seen: set[str]
) -> list[PlannedRun]:
    from gradleak.utility import UtilityConfig, check_utility_config, utility_identity

    refuse_unknown_keys(list(table), UTILITY_KEYS, "[utility]", where)
    defaults = dataclass_defaults(UtilityConfig)
    seeds = whole_numbers(table.pop("seeds", [defaults["seed"]]), "utility.seeds", where, low=0)
    defenses = defense_entries(table.pop("defenses"), "utility.defenses", where) if "defenses" in table else grid_defenses
    if [] not in defenses:
        defenses = [[], *defenses]  # the undefended baseline is always trained
    base: dict[str, Any] = dict(defaults)
    for key in ("device", "data_root", "download"):
        if key in fixed:
            base[key] = fixed[key]
    for key, value in table.items():
        if key == "model":
            if not isinstance(value, str) or not value.strip():
                raise GradleakError(f"{where}: utility.model must be a model name or \"default\" (got {value!r})")
            base[key] = None if value.strip() == "default" else value.strip()
        else:
            base[key] = typed_value(value, defaults[key], f"utility.{key}", where)
    runs = []
    for specs, seed in itertools.product(defenses, seeds):
        config = {**base, "defenses": list(specs), "seed": seed}
        check_utility_config(UtilityConfig(**config), where=f"{where}: [utility]")
        run_id = run_id_for("utility", utility_identity(config))
        if run_id in seen:
            continue
        seen.add(run_id)
        axes = {"dataset": config["dataset"], "model": config["model"] or "default", "defense": defense_label(specs), "seed": seed}
        label = f"utility/{config['dataset']}/{config['model'] or 'default'}/{defense_label(specs)}/s{seed}"
        runs.append(PlannedRun(run_id=run_id, kind="utility", label=label, config=config, axes=axes))
    return runs

