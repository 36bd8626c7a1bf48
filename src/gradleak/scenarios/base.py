"""What every scenario shares: the client's loss, the parameters it sends, the forward mode,
the registry, and the declarations the orchestrators read."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gradleak.errors import GradleakError
from gradleak.registry import Registry
from gradleak.types import SharedUpdate


def cross_entropy_for_soft_labels(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Batch-mean cross entropy against one-hot or soft targets, as DLG's ``cross_entropy_for_onehot``."""
    return torch.mean(torch.sum(-targets * F.log_softmax(logits, dim=-1), dim=-1))


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return F.one_hot(labels.long(), num_classes).to(torch.float32)


def functional_forward(model: nn.Module, weights: Sequence[torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """Run ``model`` with its parameters replaced by ``weights`` (same order as ``parameters()``)."""
    names = [n for n, _ in model.named_parameters()]
    return torch.func.functional_call(model, dict(zip(names, weights)), (images,))


def sent_parameters(model: nn.Module) -> tuple[tuple[str, ...] | None, list[torch.Tensor]]:
    """The parameters a client trains and so sends: their names (``None`` when that is all of
    them, the classic case) and the tensors, in ``named_parameters()`` order."""
    named = list(model.named_parameters())
    sent = [(n, p) for n, p in named if p.requires_grad]
    if not sent:
        raise GradleakError("the model has no trainable parameters (all have requires_grad=False): nothing would be sent")
    names = None if len(sent) == len(named) else tuple(n for n, _ in sent)
    return names, [p for _, p in sent]


@contextlib.contextmanager
def forward_mode(model: nn.Module, training: bool | None) -> Iterator[None]:
    """Run the client's forward in train (batch statistics) or eval mode, then restore the model's."""
    if training is None:
        yield
        return
    before = {m: m.training for m in model.modules()}
    model.train(training)
    try:
        yield
    finally:
        for m, mode in before.items():
            m.training = mode


def num_classes_of(model: nn.Module, images: torch.Tensor) -> int:
    # Read from the classifier rather than running a forward pass, which would move BatchNorm stats.
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise GradleakError("the model has no Linear classifier layer: gradleak needs one to count classes")
    return int(linears[-1].out_features)


SCENARIOS: Registry[type] = Registry("scenario")


def scenario_settings() -> dict[str, list[str]]:
    """Each run setting some scenario reads (e.g. ``clients``), with the scenarios that read it.

    Example:
        >>> import gradleak.scenarios
        >>> scenario_settings()["local_steps"]
        ['fedavg']
    """
    found: dict[str, list[str]] = {}
    for name in SCENARIOS.names():
        for setting in getattr(SCENARIOS.get(name), "run_settings", ()):
            found.setdefault(setting, []).append(name)
    return found
