"""What every scenario shares: the client's loss, the parameters it sends, the forward mode,
the registry, and the declarations the orchestrators read."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from gradleak.errors import GradleakError
from gradleak.objective import cross_entropy_for_soft_labels, one_hot  # noqa: F401 - re-exported; the client forward model owns them
from gradleak.objective import trainable_parameter_names
from gradleak.registry import Registry
from gradleak.types import SharedUpdate


def functional_forward(model: nn.Module, weights: Sequence[torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """Run ``model`` with its parameters replaced by ``weights`` (same order as ``parameters()``)."""
    names = [n for n, _ in model.named_parameters()]
    return torch.func.functional_call(model, dict(zip(names, weights)), (images,))


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


@dataclass(kw_only=True)
class LocalClient:
    """One client computing its update locally (FedSGD, FedAvg): the defenses it applies, the
    random stream they draw from, its loss and its BatchNorm mode, and the steps every such client
    takes around its own computation (targets, the parameters it sends, packaging and defending)."""

    defenses: Sequence[Any] = field(default_factory=tuple)
    generator: torch.Generator | None = None
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None  # (logits, one-hot targets) -> scalar
    training: bool | None = None  # BatchNorm mode of the client's forward (None: the model's own)

    def targets(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[int, torch.Tensor, tuple[str, ...] | None]:
        """(number of classes, one-hot targets, names of the parameters sent; None: all)."""
        num_classes = num_classes_of(model, images)
        return num_classes, one_hot(labels, num_classes).to(images.device), trainable_parameter_names(model)

    def package(
        self, tensors: Sequence[torch.Tensor], images: torch.Tensor, num_classes: int, names: tuple[str, ...] | None,
        *, kind: str, applied: Sequence[Any] = (), then: Sequence[Any] = (), **details: Any,
    ) -> SharedUpdate:
        """The update the client shares: ``tensors`` recorded with the defenses ``applied`` while
        computing them, then each defense in ``then`` applied to it in order."""
        update = SharedUpdate(
            tensors=tuple(t.detach() for t in tensors),
            kind=kind,  # type: ignore[arg-type]
            batch_size=images.shape[0],
            input_shape=tuple(images.shape[1:]),  # type: ignore[arg-type]
            num_classes=num_classes,
            defenses=tuple(d.name for d in applied),
            parameter_names=names,
            training=self.training,
            **details,
        )
        for defense in then:
            update = defense.apply(update, generator=self.generator)
        return update


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
