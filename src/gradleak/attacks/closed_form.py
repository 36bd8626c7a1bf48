"""What the closed-form, model-specific attacks share: find the structure, solve, verify.

A subclass says where its equations are (:meth:`ClosedForm.find`, a string saying why not when
they are not there) and how to solve them (:meth:`ClosedForm.solve`); this base checks, labels the
result from the last layer's gradient and verifies it by the relative error of the update it
implies (so :class:`~gradleak.attacks.auto.Auto` accepts it only when it explains the update).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from gradleak.attacks.base import AttackContext, BaseAttack, as_gradient
from gradleak.attacks.labels import restore_batch_labels
from gradleak.attacks.probe import Call, probe_model
from gradleak.errors import GradleakError
from gradleak.objective import Loss, relative_update_error
from gradleak.types import AttackResult, SharedUpdate, StepReport


def one_image_first_layer(
    model: nn.Module, update: SharedUpdate, kind: type[nn.Module], *, batch_problem: str, missing: str
) -> tuple[Call, SharedUpdate] | str:
    """(the model's first parameterised call, the update as a gradient) when it is one image's
    gradient and that layer is a ``kind``; else why not (``batch_problem``/``missing`` say it)."""
    gradient = as_gradient(update)
    if gradient is None:
        return f"the update is a {update.local_steps}-step FedAvg change, not one gradient"
    if update.batch_size != 1:
        return f"a batch of {update.batch_size} {batch_problem} (this needs one image)"
    first = probe_model(model, update.input_shape, training=update.training).first
    if first is None or not isinstance(first.module, kind):
        return missing
    return first, gradient


@dataclass
class ClosedForm(BaseAttack):
    iterations: int = 1  # accepted for a uniform interface (--iters); a closed form has no iterations
    loss: Loss | None = None  # only to verify the result; the solve itself does not depend on it
    name: str = "closed_form"

    def find(self, model: nn.Module, update: SharedUpdate) -> object:
        """The equations to solve, or a string saying why the attack does not apply."""
        raise NotImplementedError

    def solve(self, found: object, update: SharedUpdate) -> tuple[torch.Tensor, str]:
        """(images (B, C, H, W), a one-line stop reason) from what :meth:`find` returned."""
        raise NotImplementedError

    def _found(self, model: nn.Module, update: SharedUpdate) -> object:
        found = self.find(model, update)
        if isinstance(found, str):
            raise GradleakError(f"attack {self.name!r} does not fit: {found}; use --attack auto or ig")
        return found

    def check(self, update: SharedUpdate, model: nn.Module | None = None) -> None:
        if model is not None:
            self._found(model, update)

    def reconstruct(self, model: nn.Module, update: SharedUpdate, context: AttackContext) -> AttackResult:
        images, stop_reason = self.solve(self._found(model, update), update)  # deterministic: no generator
        images = images.float().to(context.device)
        labels = restore_batch_labels(update)
        error = relative_update_error(model, update, images.clamp(0, 1), labels, loss=self.loss)
        if context.observer is not None:
            context.observer(StepReport(iteration=1, loss=error, images=images.clamp(0, 1)))
        return AttackResult(
            images=images, labels=labels, losses=[error], iterations=1, stop_reason=stop_reason,
            extras={"relative_gradient_error": error},
        )
