"""FedSGD: the client shares the batch-mean gradient of one step (the DLG setting)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from gradleak.errors import GradleakError
from gradleak.objective import ClientForward
from gradleak.scenarios.base import SCENARIOS, LocalClient, cross_entropy_for_soft_labels, forward_mode
from gradleak.types import SharedUpdate


@dataclass
class FedSGD(LocalClient):
    """The client shares the batch-mean gradient of one step (the DLG setting).

    ``defenses`` are applied, in order, to the gradient before it is shared; a DP-SGD defense
    instead replaces how the gradient is computed (per-example clipping and noise).
    """

    #: run settings this scenario reads (none beyond the defenses), and its default attack (None: the run's)
    run_settings: ClassVar[tuple[str, ...]] = ()
    label_settings: ClassVar[tuple[str, ...]] = ()
    default_attack: ClassVar[str | None] = None

    @classmethod
    def from_run(cls, settings: dict[str, Any], *, defenses: Sequence[Any], generator: torch.Generator | None,
                 context: Any = None) -> FedSGD:
        """Build from a run's settings (``run_settings`` of them are used)."""
        return cls(defenses=defenses, generator=generator)

    @classmethod
    def label(cls, settings: dict[str, Any]) -> str:
        """The scenario's name on a sweep axis or in a report."""
        return "fedsgd"

    def share(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> SharedUpdate:
        num_classes, targets, names = self.targets(model, images, labels)
        loss_fn = self.loss or cross_entropy_for_soft_labels
        post_hoc = [d for d in self.defenses if not hasattr(d, "private_gradient")]
        at_gradient_time = [d for d in self.defenses if hasattr(d, "private_gradient")]
        if len(at_gradient_time) > 1:
            raise GradleakError("give DP-SGD at most once: --defense dpsgd:... appears twice")
        if at_gradient_time:
            if names is not None:
                raise GradleakError("DP-SGD with frozen parameters is not supported: unfreeze them or drop dpsgd")
            with forward_mode(model, self.training):
                grads = at_gradient_time[0].private_gradient(model, loss_fn, images, targets, generator=self.generator)
        else:
            client = ClientForward(model, parameter_names=names, training=self.training, loss=self.loss)
            grads = client.gradient(images, targets)
        return self.package(grads, images, num_classes, names, kind="gradient", applied=at_gradient_time, then=post_hoc)


SCENARIOS.register("fedsgd", FedSGD)
