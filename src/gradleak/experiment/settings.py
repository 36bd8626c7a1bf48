"""Which run settings the chosen attack and scenario take: each declares its own, and a flag it
does not read is refused in one line before any data is read."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict
from typing import Any

from gradleak.errors import GradleakError
from gradleak.experiment.config import RunConfig


def attack_overrides(config: RunConfig, attack_factory: Any) -> dict[str, Any]:
    """Only what the user set overrides the attack's own defaults (each attack owns its config);
    a setting the attack does not declare is refused in one line naming the attacks that take it."""
    overrides = {name: getattr(config, name) for name in ATTACK_SETTINGS if getattr(config, name) is not None}
    for name in overrides:
        refuse_unsupported_setting(attack_factory, name, attack=config.attack)
    return overrides


def check_scenario_settings(config: RunConfig) -> None:
    """Refuse a scenario setting the chosen scenario does not read, before any data is loaded
    (which scenarios read which setting is what they declare)."""
    from gradleak.scenarios import SCENARIOS, scenario_settings

    scenario = SCENARIOS.get(config.scenario)
    defaults = RunConfig()
    for setting, readers in scenario_settings().items():
        if config.scenario not in readers and getattr(config, setting) != getattr(defaults, setting):
            flag = "--" + setting.replace("_", "-")
            raise GradleakError(
                f"{flag} applies to --scenario {' or '.join(readers)}, not {config.scenario}: "
                f"drop it or use --scenario {readers[0]}"
            )
    if hasattr(scenario, "validate"):
        scenario.validate(asdict(config))


def _has_setting(attack_factory: Any, name: str) -> bool:
    """Whether a (dataclass) attack has the setting ``name`` that a flag would override."""
    return name in {f.name for f in dataclasses.fields(attack_factory)}


# Run settings an attack may take, with their flags: each attack declares the ones it takes as
# dataclass fields, and a flag it has no field for is refused in one line (never a TypeError).
ATTACK_SETTINGS = {"tv_weight": "--tv-weight", "clamp": "--clamp", "restarts": "--restarts", "noise_source": "--noise-source",
                   "early_stop": "--early-stop"}


def refuse_unsupported_setting(attack_factory: Any, name: str, *, attack: str) -> None:
    """One line naming the attacks that take setting ``name``, when ``attack`` does not."""
    from gradleak.attacks import ATTACKS

    if _has_setting(attack_factory, name):
        return
    takers = [n for n in ATTACKS.names() if _has_setting(ATTACKS.get(n), name)]
    listed = f"{', '.join(takers[:-1])} and {takers[-1]}" if len(takers) > 1 else "".join(takers)
    raise GradleakError(
        f"{ATTACK_SETTINGS[name]} applies to the {listed} attacks, not {attack}: drop it"
        + (f" or use --attack {takers[0]}" if takers else "")
    )

