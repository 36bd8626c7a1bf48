"""FedAvg: the client shares its weight change after several local SGD steps."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from gradleak.errors import GradleakError
from gradleak.objective import ClientForward, trainable_parameter_names
from gradleak.scenarios.base import SCENARIOS, num_classes_of, one_hot
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
        names = trainable_parameter_names(model)
        client = ClientForward(model, parameter_names=names, training=self.training, loss=self.loss)
        delta = tuple(
            d.detach() for d in client.weight_change(images, targets, local_steps=self.local_steps, local_lr=self.local_lr)
        )
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
