"""FedAvg: the client shares its weight change after several local SGD steps."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from gradleak.errors import GradleakError
from gradleak.scenarios.base import (
    SCENARIOS,
    cross_entropy_for_soft_labels,
    forward_mode,
    num_classes_of,
    one_hot,
    sent_parameters,
)
from gradleak.types import SharedUpdate


@dataclass
class FedAvg:
    """The client runs ``local_steps`` of full-batch SGD with ``local_lr`` and shares the weight change.

    As in Inverting Gradients' multi-step setting the server knows the step count and rate.
    """

    run_settings: ClassVar[tuple[str, ...]] = ("local_steps", "local_lr")
    label_settings: ClassVar[tuple[str, ...]] = ()  # local steps are their own sweep axis
    default_attack: ClassVar[str | None] = None

    local_steps: int = 1
    local_lr: float = 1e-4
    defenses: Sequence[Any] = field(default_factory=tuple)
    generator: torch.Generator | None = None
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None  # (logits, one-hot targets) -> scalar
    training: bool | None = None  # BatchNorm mode of the client's forward (None: the model's own)

    def __post_init__(self) -> None:
        if self.local_steps < 1:
            raise GradleakError(f"--local-steps must be at least 1 (got {self.local_steps})")
        if not self.local_lr > 0:
            raise GradleakError(f"--local-lr must be positive (got {self.local_lr})")
        if any(hasattr(d, "private_gradient") for d in self.defenses):
            raise GradleakError("DP-SGD is supported with --scenario fedsgd only: drop --defense dpsgd or use fedsgd")

    @classmethod
    def from_run(cls, settings: dict[str, Any], *, defenses: Sequence[Any], generator: torch.Generator | None,
                 context: Any = None) -> FedAvg:
        return cls(local_steps=settings["local_steps"], local_lr=settings["local_lr"], defenses=defenses, generator=generator)

    @classmethod
    def label(cls, settings: dict[str, Any]) -> str:
        return "fedavg"

    def share(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> SharedUpdate:
        num_classes = num_classes_of(model, images)
        targets = one_hot(labels, num_classes).to(images.device)
        loss_fn = self.loss or cross_entropy_for_soft_labels
        names, sent = sent_parameters(model)
        all_names = [n for n, _ in model.named_parameters()]
        sent_names = names if names is not None else all_names
        start = {n: p.detach().clone() for n, p in model.named_parameters()}
        weights = {n: (start[n].clone().requires_grad_(True) if n in sent_names else start[n]) for n in all_names}
        with forward_mode(model, self.training):
            for _ in range(self.local_steps):
                logits = torch.func.functional_call(model, weights, (images,))
                grads = torch.autograd.grad(loss_fn(logits, targets), [weights[n] for n in sent_names])
                for n, g in zip(sent_names, grads):
                    weights[n] = (weights[n] - self.local_lr * g).detach().requires_grad_(True)
        delta = tuple((weights[n] - start[n]).detach() for n in sent_names)
        update = SharedUpdate(
            tensors=delta,
            kind="weight_delta",
            batch_size=images.shape[0],
            input_shape=tuple(images.shape[1:]),  # type: ignore[arg-type]
            num_classes=num_classes,
            local_steps=self.local_steps,
            local_lr=self.local_lr,
            parameter_names=names,
            training=self.training,
        )
        for defense in self.defenses:
            update = defense.apply(update, generator=self.generator)
        return update


SCENARIOS.register("fedavg", FedAvg)
