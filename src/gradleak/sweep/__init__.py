"""Sweeps: a TOML grid of experiments, run on Dask, recorded in one crash-safe SQLite store.

* :mod:`gradleak.sweep.grid` -- the config schema; reading a config file (its expansion into runs:
  :mod:`~gradleak.sweep.expand` of the axes :mod:`~gradleak.sweep.axes` reads, with
  :mod:`~gradleak.sweep.values` checking each value,
  :mod:`~gradleak.sweep.weights_axis` and :mod:`~gradleak.sweep.utility_axis` for those tables,
  :mod:`~gradleak.sweep.run_ids` for the stable ids and :mod:`~gradleak.sweep.plan` for the result).
* :mod:`gradleak.sweep.store` -- the SQLite store (one row per run; claims are transactions).
* :mod:`gradleak.sweep.engine` -- execution on a ``dask.distributed`` cluster.

Importing this package does not import Dask; only :func:`gradleak.sweep.engine.run_sweep` does.
"""

from __future__ import annotations

from gradleak.sweep.grid import PlannedRun, SweepPlan, expand, load_plan, parse_plan
from gradleak.sweep.store import Store

__all__ = ["PlannedRun", "Store", "SweepPlan", "expand", "load_plan", "parse_plan"]
