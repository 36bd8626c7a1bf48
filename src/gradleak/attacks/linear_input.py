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

from dataclasses import dataclass

import torch
from torch import nn

from gradleak.attacks.base import ATTACKS
from gradleak.attacks.closed_form import ClosedForm, one_image_first_layer
from gradleak.objective import sent_parameters
from gradleak.types import SharedUpdate


def first_linear_gradients(model: nn.Module, update: SharedUpdate) -> tuple[torch.Tensor, torch.Tensor] | str:
    """(weight gradient, bias gradient) of the model's first layer when this attack applies, else why not."""
    found = one_image_first_layer(
        model, update, nn.Linear, batch_problem="mixes the first layer's rows", missing="the first layer is not a Linear layer"
    )
    if isinstance(found, str):
        return found
    first, gradient = found
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
class LinearInputInversion(ClosedForm):
    """The first Linear layer's input from its weight and bias gradients (see the module doc)."""

    name: str = "linear_input"

    def find(self, model: nn.Module, update: SharedUpdate) -> tuple[torch.Tensor, torch.Tensor] | str:
        return first_linear_gradients(model, update)

    def solve(self, found: object, update: SharedUpdate) -> tuple[torch.Tensor, str]:
        g_weight, g_bias = (t.detach().double() for t in found)  # type: ignore[union-attr]
        x = g_weight.T @ g_bias / (g_bias @ g_bias).clamp_min(1e-300)
        return x.reshape(1, *update.input_shape), (
            "solved: the first Linear layer's input is its weight-gradient rows over its bias gradient"
        )


ATTACKS.register("linear_input", LinearInputInversion)
