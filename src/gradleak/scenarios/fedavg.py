"""FedAvg: the client shares its weight change after several local SGD steps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from gradleak.errors import GradleakError
from gradleak.objective import ClientForward
from gradleak.scenarios.base import SCENARIOS, LocalClient
from gradleak.types import SharedUpdate


@dataclass
class FedAvg(LocalClient):
    """The client runs ``local_steps`` of full-batch SGD with ``local_lr`` and shares the weight change.

    As in Inverting Gradients' multi-step setting the server knows the step count and rate.
    """

    run_settings: ClassVar[tuple[str, ...]] = ("local_steps", "local_lr")
    label_settings: ClassVar[tuple[str, ...]] = ()  # local steps are their own sweep axis
    default_attack: ClassVar[str | None] = None

    local_steps: int = 1
    local_lr: float = 1e-4

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
        num_classes, targets, names = self.targets(model, images, labels)
        client = ClientForward(model, parameter_names=names, training=self.training, loss=self.loss)
        delta = client.weight_change(images, targets, local_steps=self.local_steps, local_lr=self.local_lr)
        return self.package(delta, images, num_classes, names, kind="weight_delta", then=self.defenses,
                            local_steps=self.local_steps, local_lr=self.local_lr)


SCENARIOS.register("fedavg", FedAvg)
