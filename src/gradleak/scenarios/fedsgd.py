"""FedSGD: the client shares the batch-mean gradient of one step (the DLG setting)."""

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
class FedSGD:
    """The client shares the batch-mean gradient of one step (the DLG setting).

    ``defenses`` are applied, in order, to the gradient before it is shared; a DP-SGD defense
    instead replaces how the gradient is computed (per-example clipping and noise).
    """

    #: run settings this scenario reads (none beyond the defenses), and its default attack (None: the run's)
    run_settings: ClassVar[tuple[str, ...]] = ()
    label_settings: ClassVar[tuple[str, ...]] = ()
    default_attack: ClassVar[str | None] = None

    defenses: Sequence[Any] = field(default_factory=tuple)
    generator: torch.Generator | None = None
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None  # (logits, one-hot targets) -> scalar
    training: bool | None = None  # BatchNorm mode of the client's forward (None: the model's own)

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
        num_classes = num_classes_of(model, images)
        targets = one_hot(labels, num_classes).to(images.device)
        loss_fn = self.loss or cross_entropy_for_soft_labels
        names, params = sent_parameters(model)
        post_hoc = [d for d in self.defenses if not hasattr(d, "private_gradient")]
        at_gradient_time = [d for d in self.defenses if hasattr(d, "private_gradient")]
        if len(at_gradient_time) > 1:
            raise GradleakError("give DP-SGD at most once: --defense dpsgd:... appears twice")
        with forward_mode(model, self.training):
            if at_gradient_time:
                if names is not None:
                    raise GradleakError("DP-SGD with frozen parameters is not supported: unfreeze them or drop dpsgd")
                grads = tuple(
                    g.detach()
                    for g in at_gradient_time[0].private_gradient(model, loss_fn, images, targets, generator=self.generator)
                )
            else:
                loss = loss_fn(model(images), targets)
                grads = tuple(g.detach() for g in torch.autograd.grad(loss, params))
        update = SharedUpdate(
            tensors=grads,
            kind="gradient",
            batch_size=images.shape[0],
            input_shape=tuple(images.shape[1:]),  # type: ignore[arg-type]
            num_classes=num_classes,
            defenses=tuple(d.name for d in at_gradient_time),
            parameter_names=names,
            training=self.training,
        )
        for defense in post_hoc:
            update = defense.apply(update, generator=self.generator)
        return update


SCENARIOS.register("fedsgd", FedSGD)
