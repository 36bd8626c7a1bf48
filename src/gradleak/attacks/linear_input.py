"""``linear_input``: the input of a model whose first layer is a biased Linear, in closed form.

For ``z = W x + b`` and one sample, ∂L/∂W = δ xᵀ and ∂L/∂b = δ, so every row j with δ_j ≠ 0 gives
x = (∂L/∂W)_j / (∂L/∂b)_j; the least-squares combination of all rows, x = Gᵀδ / ‖δ‖², uses
them all (Phong et al. 2017; the R-GAP/"analytic" observation). Exact for one image, whatever
comes after the layer (ReLU, GELU, BatchNorm, a deep MLP), with any loss. It applies when the
model's first parameterised module is an ``nn.Linear`` with a bias that sees the raw input
(flattened), both its weight and bias gradients are shared, and the update is one sample's
gradient (or a one-step FedAvg change). A batch mixes the rows (Σ_b δ_b x_bᵀ): not this attack.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from gradleak.scenarios import FedSGD
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(48, 16), nn.ReLU(), nn.Linear(16, 5))
    >>> secret = torch.rand(1, 3, 4, 4)
    >>> result = LinearInputInversion().run(net, FedSGD().share(net, secret, torch.tensor([2])))
    >>> bool((result.images - secret).abs().max() < 1e-4), int(result.labels[0])
    (True, 2)
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from gradleak.attacks.base import ATTACKS, as_gradient, finish, model_device
from gradleak.attacks.labels import restore_batch_labels
from gradleak.attacks.probe import probe_model
from gradleak.errors import GradleakError
from gradleak.objective import Loss, relative_update_error, sent_parameters
from gradleak.types import AttackResult, SharedUpdate, StepObserver, StepReport


def first_linear_gradients(model: nn.Module, update: SharedUpdate) -> tuple[torch.Tensor, torch.Tensor] | str:
    """(weight gradient, bias gradient) of the model's first layer when this attack applies, else why not."""
    gradient = as_gradient(update)
    if gradient is None:
        return f"the update is a {update.local_steps}-step FedAvg change, not one gradient"
    if update.batch_size != 1:
        return f"a batch of {update.batch_size} mixes the first layer's rows (this needs one image)"
    first = probe_model(model, update.input_shape, training=update.training).first
    if first is None or not isinstance(first.module, nn.Linear):
        return "the first layer is not a Linear layer"
    if not first.sees_raw_input:
        return "the first Linear layer does not see the raw (flattened) input"
    layer = first.module
    if layer.bias is None:
        return "the first Linear layer has no bias"
    position = {id(p): i for i, (_, p) in enumerate(sent_parameters(model, update.parameter_names))}
    if id(layer.weight) not in position or id(layer.bias) not in position:
        return "the first Linear layer's weight or bias gradient is not shared (frozen)"
    tensors = gradient.tensors
    return tensors[position[id(layer.weight)]], tensors[position[id(layer.bias)]]


@dataclass
class LinearInputInversion:
    """The first Linear layer's input from its weight and bias gradients (see the module doc)."""

    loss: Loss | None = None  # only to verify the result; the solve itself does not depend on it
    name: str = "linear_input"

    def check(self, update: SharedUpdate, model: nn.Module | None = None) -> None:
        if model is not None:
            found = first_linear_gradients(model, update)
            if isinstance(found, str):
                raise GradleakError(f"attack 'linear_input' does not fit: {found}; use --attack auto or ig")

    def run(
        self,
        model: nn.Module,
        update: SharedUpdate,
        *,
        generator: torch.Generator | None = None,
        observer: StepObserver | None = None,
    ) -> AttackResult:
        del generator  # deterministic
        start = time.perf_counter()
        found = first_linear_gradients(model, update)
        if isinstance(found, str):
            raise GradleakError(f"attack 'linear_input' does not fit: {found}; use --attack auto or ig")
        g_weight, g_bias = (t.detach().double() for t in found)
        x = g_weight.T @ g_bias / (g_bias @ g_bias).clamp_min(1e-300)
        images = x.float().reshape(1, *update.input_shape).to(model_device(model))
        labels = restore_batch_labels(update)
        error = relative_update_error(model, update, images.clamp(0, 1), labels, loss=self.loss)
        if observer is not None:
            observer(StepReport(iteration=1, loss=error, images=images.clamp(0, 1)))
        return finish(
            AttackResult(
                images=images.cpu(), labels=labels, losses=[error], iterations=1,
                seconds=time.perf_counter() - start,
                stop_reason="solved: the first Linear layer's input is its weight-gradient rows over its bias gradient",
                extras={"relative_gradient_error": error},
            )
        )


ATTACKS.register("linear_input", LinearInputInversion)
