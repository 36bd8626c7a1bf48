"""One gradient-leakage experiment: private data → client update → attack → scores and pictures.

The runner is the only place that holds both the private data and the attack's output; the attack
itself receives the model and the :class:`~gradleak.types.SharedUpdate` alone.

* :mod:`~gradleak.experiment.config` -- :class:`RunConfig` (every setting of a run) and what a
  prepared run holds.
* :mod:`~gradleak.experiment.settings` -- which settings the chosen attack and scenario take.
* :mod:`~gradleak.experiment.model` -- the server's model and its checked weights.
* :mod:`~gradleak.experiment.private_data` -- the private batch and its labels.
* :mod:`~gradleak.experiment.prepare` -- validation and the client's update (writes nothing).
* :mod:`~gradleak.experiment.runner` -- attack, score, write (:func:`run_experiment`).
* :mod:`~gradleak.experiment.progress`, :mod:`~gradleak.experiment.records`,
  :mod:`~gradleak.experiment.outputs` -- the observer, what ``metrics.json`` records, the files.
"""

from __future__ import annotations

from gradleak.experiment.config import Prepared, RunConfig, RunOutcome
from gradleak.experiment.prepare import prepare, prepare_captured
from gradleak.experiment.runner import execute, run_experiment

__all__ = ["Prepared", "RunConfig", "RunOutcome", "execute", "prepare", "prepare_captured", "run_experiment"]
