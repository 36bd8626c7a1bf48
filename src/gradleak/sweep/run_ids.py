"""Stable run ids: a hash of a run's canonical config, so a re-run finds its finished runs."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from gradleak.sweep.values import dataclass_defaults

SCHEMA_VERSION = 1


# Fields that do not change a run's result and so are not part of its id.
NOT_IN_ID = {"out", "overwrite", "quiet", "save_history", "save_final", "download", "data_root", "device", "weights"}
# RunConfig fields as of schema 1: always hashed. Fields added later are hashed only when they
# differ from their default, so that adding a field does not change every existing id.
CORE_RUN_FIELDS = {
    "dataset", "indices", "images", "labels", "num_classes", "split", "iterations", "seed", "model",
    "attack", "tv_weight", "clamp", "scenario", "local_steps", "local_lr", "defenses",
}


def run_id_for(kind: str, identity: Mapping[str, Any]) -> str:
    """Stable id: sha256 of the canonical JSON of the run's identity, 16 hex digits."""
    canonical = json.dumps({"kind": kind, "schema": SCHEMA_VERSION, **identity}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def attack_identity(config: Mapping[str, Any]) -> dict[str, Any]:
    from gradleak.experiment import RunConfig

    defaults = dataclass_defaults(RunConfig)
    return {
        k: v
        for k, v in config.items()
        if k not in NOT_IN_ID and (k in CORE_RUN_FIELDS or v != defaults.get(k, object()))
    }

