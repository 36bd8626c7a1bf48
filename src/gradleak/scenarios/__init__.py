"""Scenarios: what a federated client computes and shares. Attacks see only the result.

Each scenario is one file that declares the run settings it reads (``run_settings``), which of
them name it on a sweep axis (``label_settings``), the attack a server in that scenario uses by
default, and how it is built from a run's settings (``from_run``); it registers itself in
:data:`SCENARIOS`. The runner, the sweep grid, the CLI and the reports iterate over these
declarations and never switch on a scenario's name.

Example:
    >>> import torch
    >>> from gradleak.models import build_model
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = build_model("lenet", channels=3, image_size=32, num_classes=10)
    >>> update = FedSGD().share(model, torch.rand(1, 3, 32, 32), torch.tensor([3]))
    >>> update.kind, update.batch_size, len(update.tensors) == len(list(model.parameters()))
    ('gradient', 1, True)
"""

from __future__ import annotations

from gradleak.scenarios.base import (
    SCENARIOS,
    cross_entropy_for_soft_labels,
    forward_mode,
    functional_forward,
    one_hot,
    scenario_settings,
    sent_parameters,
)

# Import order is the order scenarios are listed in help and errors.
from gradleak.scenarios.fedsgd import FedSGD  # isort: skip
from gradleak.scenarios.fedavg import FedAvg  # isort: skip
from gradleak.scenarios.secagg import SecAgg  # isort: skip
from gradleak.scenarios.imprint import Imprint  # isort: skip

__all__ = [
    "SCENARIOS",
    "FedAvg",
    "FedSGD",
    "Imprint",
    "SecAgg",
    "cross_entropy_for_soft_labels",
    "forward_mode",
    "functional_forward",
    "one_hot",
    "scenario_settings",
    "sent_parameters",
]
