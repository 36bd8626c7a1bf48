"""Analytic inversion of sigmoid conv nets (R-GAP style): exact recovery by linear algebra.

For one sample with cross entropy, the final Linear layer's bias gradient is the error signal
δ = softmax(z) − onehot(y), and its weight gradient is δ·hᵀ, so the layer's input is h = Gᵀδ/‖δ‖².
Walking back through ``Conv2d → Sigmoid`` pairs, each convolution's input ``a`` satisfies two
*linear* systems once its output is known: the forward pass ``conv(a) = logit(output) − bias`` and
the shared weight gradient ``∂L/∂W = corr(δ_z, a)``. Stacking both is (over)determined for the
DLG LeNets, so we solve it by matrix-free, Jacobi-preconditioned CGLS (a handful of convolutions
per iteration) and propagate δ to the layer below. No optimisation of the gradient-matching
objective, no random start: milliseconds to a second on a CPU.

The attack never sees the private data; it judges its own result by the relative gradient error
of the reconstruction (re-computing the gradient it implies), so :class:`~gradleak.attacks.auto.Auto`
can fall back to optimisation when the model does not fit or the update was perturbed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.grad import conv2d_input, conv2d_weight

from gradleak.attacks.base import ATTACKS, model_device, require_gradient
from gradleak.attacks.labels import idlg_label
from gradleak.errors import GradleakError
from gradleak.scenarios import cross_entropy_for_soft_labels, one_hot
from gradleak.types import AttackResult, SharedUpdate, StepObserver, StepReport


def sigmoid_conv_layers(model: nn.Module) -> tuple[list[nn.Conv2d], nn.Linear] | str:
    """The model's (conv layers, final Linear) if it is ``(Conv2d → Sigmoid)* → Linear``, else why not."""
    leaves = [m for m in model.modules() if len(list(m.children())) == 0]
    if not leaves or not isinstance(leaves[-1], nn.Linear):
        return "the model does not end in a Linear layer"
    head = leaves[-1]
    if head.bias is None:
        return "the final Linear layer has no bias"
    body = leaves[:-1]
    if len(body) % 2 or not body:
        return "the model is not a stack of Conv2d → Sigmoid pairs before its Linear head"
    convs: list[nn.Conv2d] = []
    for conv, act in zip(body[::2], body[1::2]):
        if not isinstance(conv, nn.Conv2d) or not isinstance(act, nn.Sigmoid):
            return f"layer {type(conv).__name__} → {type(act).__name__} is not Conv2d → Sigmoid"
        if conv.bias is None or conv.groups != 1 or conv.dilation != (1, 1) or not isinstance(conv.padding, tuple):
            return "a convolution has no bias, groups or dilation"
        convs.append(conv)
    return convs, head


def relative_gradient_error(
    model: nn.Module, update: SharedUpdate, images: torch.Tensor, labels: torch.Tensor
) -> float:
    """‖∇W(x̂, ŷ) − g‖² / ‖g‖²: how well a candidate explains the shared gradient (no ground truth)."""
    device = model_device(model)
    targets = one_hot(labels.to(device), update.num_classes)
    loss = cross_entropy_for_soft_labels(model(images.to(device)), targets)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    num = sum(float(((g - s.to(device)) ** 2).sum()) for g, s in zip(grads, update.tensors))
    den = sum(float((s**2).sum()) for s in update.tensors)
    return num / max(den, 1e-30)


@dataclass
class AnalyticInversion:
    """Layer-by-layer exact inversion for ``(Conv2d → Sigmoid)* → Linear`` models, batch of one.

    Example:
        >>> import torch
        >>> from gradleak.models import build_model
        >>> from gradleak.scenarios import FedSGD
        >>> _ = torch.manual_seed(0)
        >>> model = build_model("lenetmnist", channels=1, image_size=28, num_classes=10)
        >>> secret = torch.rand(1, 1, 28, 28)
        >>> result = AnalyticInversion().run(model, FedSGD().share(model, secret, torch.tensor([4])))
        >>> int(result.labels[0]), bool((result.images - secret).abs().max() < 1e-2)
        (4, True)
    """

    iterations: int = 3000  # CGLS iterations per layer, at most
    tolerance: float = 1e-14  # stop a layer's solve when its preconditioned residual falls by this
    tv_weight: float = 0.0  # accepted for a uniform interface; an exact solve needs no prior
    clamp: bool = False
    name: str = "analytic"

    def check(self, update: SharedUpdate, model: nn.Module | None = None) -> None:
        require_gradient(update, self.name)
        if update.batch_size != 1:
            raise GradleakError(
                f"attack 'analytic' inverts the gradient of a single image but the update comes from a batch of "
                f"{update.batch_size}: use --attack ig (or auto)"
            )
        if model is not None:
            layers = sigmoid_conv_layers(model)
            if isinstance(layers, str):
                raise GradleakError(f"attack 'analytic' does not fit this model: {layers}; use --attack ig (or auto)")

    def run(
        self,
        model: nn.Module,
        update: SharedUpdate,
        *,
        generator: torch.Generator | None = None,
        observer: StepObserver | None = None,
    ) -> AttackResult:
        del generator  # deterministic
        self.check(update, model)
        layers = sigmoid_conv_layers(model)
        assert not isinstance(layers, str)
        convs, head = layers
        start = time.perf_counter()
        device = model_device(model)
        grads = [g.to(device=device, dtype=torch.float64) for g in update.tensors]
        grad_of = {id(p): g for p, g in zip(model.parameters(), grads)}
        label = idlg_label(update)
        g_weight, g_bias = grad_of[id(head.weight)], grad_of[id(head.bias)]
        # Final layer: h = Gᵀδ / ‖δ‖² (least squares over all rows), δ_h = Wᵀδ.
        features = g_weight.T @ g_bias / (g_bias @ g_bias).clamp_min(1e-300)
        d_features = head.weight.detach().double().T @ g_bias
        shapes = _conv_input_shapes(convs, update.input_shape)
        out_shape = _conv_output_shape(convs[-1], shapes[-1])
        activation = features.view(1, *out_shape)
        d_activation = d_features.view(1, *out_shape)
        iterations_used = 0
        for conv, in_shape in zip(reversed(convs), reversed(shapes)):
            activation, d_activation, used = _invert_conv_sigmoid(
                conv, activation, d_activation, grad_of[id(conv.weight)], in_shape,
                max_iterations=self.iterations, tolerance=self.tolerance,
            )
            iterations_used += used
        images = activation.float().clamp(0, 1).cpu()
        labels = torch.tensor([label])
        error = relative_gradient_error(model, update, images, labels)
        seconds = time.perf_counter() - start
        if observer is not None:
            observer(StepReport(iteration=1, loss=error, images=images))
        return AttackResult(
            images=images,
            labels=labels,
            losses=[error],
            iterations=1,
            seconds=seconds,
            stop_reason="solved",
            extras={"relative_gradient_error": error, "solver_iterations": float(iterations_used)},
        )


def _conv_output_shape(conv: nn.Conv2d, in_shape: tuple[int, ...]) -> tuple[int, int, int]:
    with torch.no_grad():
        out = F.conv2d(torch.zeros(1, *in_shape), conv.weight.detach().cpu(), None, conv.stride, conv.padding)
    return tuple(out.shape[1:])  # type: ignore[return-value]


def _conv_input_shapes(convs: list[nn.Conv2d], input_shape: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    shapes = [tuple(input_shape)]
    for conv in convs[:-1]:
        shapes.append(_conv_output_shape(conv, shapes[-1]))
    return shapes  # type: ignore[return-value]


def _invert_conv_sigmoid(
    conv: nn.Conv2d,
    activation: torch.Tensor,
    d_activation: torch.Tensor,
    g_weight: torch.Tensor,
    in_shape: tuple[int, int, int],
    *,
    max_iterations: int,
    tolerance: float,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Given sigmoid(conv(a)) and ∂L/∂(that), recover a and ∂L/∂a."""
    weight = conv.weight.detach().double()
    bias = conv.bias.detach().double()  # type: ignore[union-attr]
    stride, padding = conv.stride, conv.padding
    eps = 1e-6  # logit of a saturated sigmoid is unbounded; the clamp keeps the solve finite
    out = activation.clamp(eps, 1 - eps)
    pre = torch.log(out) - torch.log1p(-out)
    d_pre = d_activation * out * (1 - out)
    full_in = (1, *in_shape)
    forward_rhs = (pre - bias.view(1, -1, 1, 1)).flatten()
    # Weight both blocks so that each counts equally whatever its scale.
    w_forward = 1.0 / float(forward_rhs.norm().clamp_min(1e-300))
    w_weight = 1.0 / float(g_weight.norm().clamp_min(1e-300))
    n_forward = forward_rhs.numel()
    rhs = torch.cat([forward_rhs * w_forward, g_weight.flatten() * w_weight])

    def apply(v: torch.Tensor) -> torch.Tensor:
        a = v.view(full_in)
        return torch.cat([
            F.conv2d(a, weight, None, stride, padding).flatten() * w_forward,
            conv2d_weight(a, weight.shape, d_pre, stride, padding).flatten() * w_weight,
        ])

    def adjoint(r: torch.Tensor) -> torch.Tensor:
        r_forward = r[:n_forward].view(pre.shape) * w_forward
        r_weight = r[n_forward:].view(weight.shape) * w_weight
        return (
            conv2d_input(full_in, weight, r_forward, stride, padding)
            + conv2d_input(full_in, r_weight, d_pre, stride, padding)
        ).flatten()

    # Jacobi preconditioner: the diagonal of AᵀA, from two transposed convolutions.
    diag = (
        conv2d_input(full_in, weight**2, torch.ones_like(pre), stride, padding) * w_forward**2
        + conv2d_input(full_in, torch.ones_like(weight), d_pre**2, stride, padding) * w_weight**2
    ).flatten()
    inv_diag = 1.0 / diag.clamp_min(1e-300)
    solution, used = _cgls(apply, adjoint, rhs, inv_diag, torch.full_like(diag, 0.5), max_iterations, tolerance)
    a = solution.view(full_in)
    d_a = conv2d_input(full_in, weight, d_pre, stride, padding)
    return a, d_a, used


def _cgls(apply, adjoint, rhs, inv_diag, x, max_iterations: int, tolerance: float):  # type: ignore[no-untyped-def]
    """Preconditioned conjugate gradients on the normal equations AᵀA x = Aᵀb."""
    residual = rhs - apply(x)
    s = adjoint(residual)
    z = inv_diag * s
    direction = z.clone()
    gamma = s @ z
    gamma0 = gamma
    iteration = 0
    for iteration in range(1, max_iterations + 1):
        q = apply(direction)
        alpha = gamma / (q @ q).clamp_min(1e-300)
        x = x + alpha * direction
        residual = residual - alpha * q
        s = adjoint(residual)
        z = inv_diag * s
        gamma_new = s @ z
        if gamma_new <= tolerance * gamma0:
            break
        direction = z + (gamma_new / gamma) * direction
        gamma = gamma_new
    return x, iteration


ATTACKS.register("analytic", AnalyticInversion)
