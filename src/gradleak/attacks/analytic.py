"""Analytic inversion of sigmoid conv nets (R-GAP style): recovery by linear algebra.

For one sample with cross entropy, the final Linear layer's bias gradient is the error signal
δ = softmax(z) − onehot(y), and its weight gradient is δ·hᵀ, so the layer's input is h = Gᵀδ/‖δ‖².
Walking back through ``Conv2d → Sigmoid`` pairs, each convolution's input ``a`` satisfies two
*linear* systems once its output is known: the forward pass ``conv(a) = logit(output) − bias`` and
the shared weight gradient ``∂L/∂W = corr(δ_z, a)``. Stacking both is (over)determined for the
DLG LeNets, so we solve it by matrix-free, Jacobi-preconditioned CGLS (a handful of convolutions
per iteration) and propagate δ to the layer below. No optimisation of the gradient-matching
objective, no random start: milliseconds to a second on a CPU.

A batch is first un-mixed at the head (:mod:`gradleak.attacks.unmix`: each sample's features and
label), then the same walk runs on all samples at once, the weight gradient being shared. Below
some layer the equations no longer pin the inputs down (for the 32×32 LeNet: from a batch of 2 on,
conv2 has 768·B forward and 3,612 gradient equations for 3,072·B unknowns). There the remaining
layers are fitted together, matching the known activation and every gradient below it, with a
smooth total-variation prior choosing among the many images that explain the gradient
(L-BFGS, float64). The result reports how many layers needed the prior.

The attack never sees the private data; it judges its own result by the relative gradient error
of the reconstruction (re-computing the gradient it implies), so :class:`~gradleak.attacks.auto.Auto`
can fall back to optimisation when the model does not fit or the update was perturbed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.grad import conv2d_input, conv2d_weight

from gradleak.attacks.base import ATTACKS, AttackContext, BaseAttack, model_device, require_gradient, smooth_total_variation
from gradleak.attacks.labels import as_gradient_signal, hidden_present_classes, idlg_label
from gradleak.attacks.unmix import solve_linear_head
from gradleak.errors import GradleakError
from gradleak.objective import ClientForward, one_hot, relative_update_error, sent_parameters
from gradleak.types import AttackResult, NoiseModel, SharedUpdate, StepObserver, StepReport


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
    return relative_update_error(model, update, images, labels)


def head_features(g_weight: torch.Tensor, g_bias: torch.Tensor, variances: torch.Tensor | None) -> torch.Tensor:
    """One sample's input h to the head from its gradients G = δhᵀ and δ (the bias gradient).

    Weighted least squares over every entry: ĥ_j = Σ_i δ_i G_ij / v_ij / Σ_i δ_i² / v_ij, with v
    the entries' noise variances. Equal variances (none, or i.i.d. noise) give Gᵀδ / ‖δ‖²; relative
    rounding (fp16: v_ij ∝ G_ij²) gives the mean over rows of G_ij / δ_i, which averages the
    rounding of all rows instead of leaning on the largest one (10× smaller error with 100 classes).

    Example:
        >>> delta, h = torch.tensor([0.3, -0.5, 0.2]), torch.tensor([0.1, 0.9])
        >>> torch.allclose(head_features(torch.outer(delta, h), delta, None), h)
        True
    """
    if variances is None:
        return g_weight.T @ g_bias / (g_bias @ g_bias).clamp_min(1e-300)
    # float32 arithmetic of the client's own gradient bounds the precision of every entry.
    weights = 1.0 / (variances + (2.0**-24 * g_weight.abs()) ** 2).clamp_min(1e-300)
    numerator = (weights * g_bias[:, None] * g_weight).sum(dim=0)
    return numerator / (weights * g_bias[:, None] ** 2).sum(dim=0).clamp_min(1e-300)


@dataclass
class AnalyticInversion(BaseAttack):
    """Layer-by-layer inversion for ``(Conv2d → Sigmoid)* → Linear`` models (exact for one image).

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
    # Weight of a layer's (whitened, normalised) forward equations against its weight-gradient ones.
    # Chosen on the tuning photos imagenet_00 and _02 under fp16 (0.01: 30.3, 0.1: 34.7, 1: 32.2,
    # 10: 10.4 dB on _00); exact gradients stay exact (79 dB on _00).
    forward_weight: float = 0.1
    whiten: bool = True  # weight each forward equation by the sigmoid's slope (False: plain logits)
    tv_weight: float = 0.0  # accepted for a uniform interface; an exact solve needs no prior
    clamp: bool = False
    # Smooth-TV weights where the gradient underdetermines the layers, one L-BFGS stage each: a
    # strong prior finds the basin, weaker ones then fit the gradient closer (measured: +0.5 dB
    # median over a single weight of 1e-3 on two batches of 4).
    prior_weights: tuple[float, ...] = (3e-3, 1e-3, 3e-4)
    prior_smoothing: float = 0.05  # Huber-like TV: sqrt(d² + ε²), smooth for L-BFGS
    fit_iterations: int = 400  # L-BFGS iterations per stage for the underdetermined layers
    # A batch whose layer-wise result leaves a relative gradient error above this is refined
    # end to end (all layers, labels fixed) by L-BFGS, e.g. when repeated labels or a
    # confidently classified image make the head's un-mixing ill-conditioned.
    refine_above: float = 1e-5
    refine_iterations: int = 1000
    # The noise model of a defended update (gradleak.attacks.noise_model): weights the head's
    # equations by their noise, so value-dependent rounding (fp16) is averaged over all rows.
    noise: NoiseModel | None = None
    name: str = "analytic"

    def check(self, update: SharedUpdate, model: nn.Module | None = None) -> None:
        require_gradient(update, self.name)
        if not any(bool(t.any()) for t in update.tensors):
            raise GradleakError(
                "every value of the shared update is zero (e.g. --defense prune:1): it carries nothing to invert; "
                "lower the pruning ratio"
            )
        if not self.prior_weights:
            raise GradleakError("attack 'analytic' needs at least one prior weight (use (0.0,) for no prior)")
        if model is not None:
            layers = sigmoid_conv_layers(model)
            if isinstance(layers, str):
                raise GradleakError(f"attack 'analytic' does not fit this model: {layers}; use --attack ig (or auto)")

    def _variances_of(self, model: nn.Module, update: SharedUpdate, parameter: torch.Tensor) -> torch.Tensor | None:
        """Noise variance of each entry of ``parameter``'s shared gradient, from ``self.noise`` (None: none
        modelled, or the same for every entry, where weighting changes nothing)."""
        if self.noise is None:
            return None
        index = next(i for i, p in enumerate(model.parameters()) if p is parameter)
        variances = self.noise.variances[index]
        if variances.dim() == 0:
            return None
        return variances.to(device=model_device(model), dtype=torch.float64).expand(parameter.shape)

    def reconstruct(self, model: nn.Module, update: SharedUpdate, context: AttackContext) -> AttackResult:
        device, observer = context.device, context.observer  # deterministic: no generator
        layers = sigmoid_conv_layers(model)
        assert not isinstance(layers, str)
        convs, head = layers
        batch = update.batch_size
        grads = [g.to(dtype=torch.float64) for g in update.tensors]
        grad_of = {id(p): g for (_, p), g in zip(sent_parameters(model, update.parameter_names), grads)}
        g_weight, g_bias = grad_of[id(head.weight)], grad_of[id(head.bias)]
        head_weight = head.weight.detach().double()
        head_residual = 0.0
        if batch == 1:
            # h from G = δhᵀ by least squares over all rows, each entry weighted by its noise, δ_h = Wᵀδ.
            labels = torch.tensor([idlg_label(update)])
            features = head_features(g_weight, g_bias, self._variances_of(model, update, head.weight)).unsqueeze(0)
            d_features = (head_weight.T @ g_bias).unsqueeze(0)
        else:
            solution = solve_linear_head(
                g_weight, g_bias, head_weight, head.bias.detach().double(), as_gradient_signal(update).to(device),
                batch, hidden=hidden_present_classes(update),
            )
            labels, features, head_residual = solution.labels.cpu(), solution.features, solution.residual
            d_features = solution.errors @ head_weight / batch
        shapes = _conv_input_shapes(convs, update.input_shape)
        out_shape = _conv_output_shape(convs[-1], shapes[-1])
        activation = features.reshape(batch, *out_shape)
        d_activation = d_features.reshape(batch, *out_shape)
        iterations_used = 0
        fit_evaluations = 0  # the iterative part (the prior fit); the closed-form walk is one step
        remaining = len(convs)
        # Walk down while each layer's equations determine its input; stop where they do not.
        while remaining and _determined(convs[remaining - 1], shapes[remaining - 1], batch):
            conv = convs[remaining - 1]
            activation, d_activation, used = _invert_conv_sigmoid(
                conv, activation, d_activation, grad_of[id(conv.weight)], (batch, *shapes[remaining - 1]),
                max_iterations=self.iterations, tolerance=self.tolerance, forward_weight=self.forward_weight,
                whiten=self.whiten,
            )
            iterations_used += used
            remaining -= 1
        if remaining:
            known, d_known = activation, d_activation
            activation = None
            for weight in self.prior_weights:
                activation, used = _fit_with_prior(
                    convs[:remaining], known, d_known, grad_of, (batch, *update.input_shape),
                    prior_weight=weight, smoothing=self.prior_smoothing, iterations=self.fit_iterations,
                    observer=observer, start=activation, numbered_from=fit_evaluations,
                )
                iterations_used += used
                fit_evaluations += used
            assert activation is not None
        images = activation.float().clamp(0, 1).cpu()
        error = relative_gradient_error(model, update, images, labels)
        refined = False
        if batch > 1 and error > self.refine_above:
            candidate = _refine_jointly(
                model, update, images, labels, iterations=self.refine_iterations,
                tv_weight=self.prior_weights[-1] if self.prior_weights else 0.0, smoothing=self.prior_smoothing,
            )
            candidate_error = relative_gradient_error(model, update, candidate, labels)
            if candidate_error < error:
                images, error, refined = candidate, candidate_error, True
        steps = fit_evaluations + 1
        if observer is not None:
            observer(StepReport(iteration=steps, loss=error, images=images, objective="relative gradient error"))
        stop_reason = "solved"
        if remaining:
            stop_reason = (
                f"solved; for a batch of {batch} the gradient does not determine the lowest {remaining} layer(s), "
                f"a total-variation prior chose among the images that explain it"
            )
        return AttackResult(
            images=images,
            labels=labels,
            losses=[error],
            iterations=steps,
            stop_reason=stop_reason,
            extras={
                "relative_gradient_error": error,
                "solver_iterations": iterations_used,  # linear solves and prior fit, inside its steps
                "layers_fitted_with_prior": remaining,
                "head_residual": head_residual,
                "refined_jointly": bool(refined),
            },
        )


def _refine_jointly(
    model: nn.Module,
    update: SharedUpdate,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    iterations: int,
    tv_weight: float,
    smoothing: float,
) -> torch.Tensor:
    """L-BFGS on the whole gradient (squared L2, normalised; smooth TV), labels fixed, from ``images``."""
    device = model_device(model)
    forward = ClientForward.of(model, update)
    shared = [t.to(device) for t in update.tensors]
    scale = 1.0 / max(float(sum((s**2).sum() for s in shared)), 1e-30)
    targets = one_hot(labels.to(device), update.num_classes)
    x = images.detach().clone().to(device).requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [x], lr=1, max_iter=iterations, history_size=50, line_search_fn="strong_wolfe",
        tolerance_grad=1e-12, tolerance_change=1e-15,
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        grads = forward.gradient(x, targets, create_graph=True)
        loss = sum(((g - s) ** 2).sum() for g, s in zip(grads, shared)) * scale
        if tv_weight:
            loss = loss + tv_weight * smooth_total_variation(x, smoothing)
        loss.backward()
        return loss

    optimizer.step(closure)
    return x.detach().clamp(0, 1).cpu()


def _determined(conv: nn.Conv2d, in_shape: tuple[int, int, int], batch: int, *, margin: float = 1.25) -> bool:
    """Whether forward + weight-gradient equations outnumber the layer's unknown inputs with a margin.

    Barely determined systems are too ill-conditioned for CGLS in practice (MNIST LeNet, batch of
    2: 4,776 equations for 4,704 unknowns reached 25-27 dB; fitted with the prior: exact). Every
    single-image case of the DLG LeNets has a ratio of 1.29 or more.
    """
    out = _conv_output_shape(conv, in_shape)
    equations = batch * out[0] * out[1] * out[2] + conv.weight.numel()
    return equations >= margin * batch * in_shape[0] * in_shape[1] * in_shape[2]


def _fit_with_prior(
    convs: list[nn.Conv2d],
    activation: torch.Tensor,
    d_activation: torch.Tensor,
    grad_of: dict[int, torch.Tensor],
    input_shape: tuple[int, ...],
    *,
    prior_weight: float,
    smoothing: float,
    iterations: int,
    observer: StepObserver | None,
    start: torch.Tensor | None = None,
    numbered_from: int = 0,
) -> tuple[torch.Tensor, int]:
    """Inputs of the lowest ``convs`` whose output is ``activation`` and whose gradients match.

    Fits ``x`` so that the stack's pre-activation equals logit(activation) and each layer's weight
    and bias gradient (back-propagated from the known ∂L/∂activation) equals the shared one, each
    term normalised; a smooth TV prior picks among the many solutions.
    """
    eps = 1e-6
    out = activation.clamp(eps, 1 - eps)
    target_pre = torch.log(out) - torch.log1p(-out)
    top_delta = d_activation * out * (1 - out)
    weights = [(c.weight.detach().double(), c.bias.detach().double(), c.stride, c.padding) for c in convs]  # type: ignore[union-attr]
    shared = [(grad_of[id(c.weight)], grad_of[id(c.bias)]) for c in convs]
    scales = [(1.0 / float((gw**2).sum().clamp_min(1e-300)), 1.0 / float((gb**2).sum().clamp_min(1e-300))) for gw, gb in shared]
    pre_scale = 1.0 / float((target_pre**2).sum().clamp_min(1e-300))

    def objective(x: torch.Tensor) -> torch.Tensor:
        inputs = [x]
        pre = x
        for i, (w, b, stride, padding) in enumerate(weights):
            pre = F.conv2d(inputs[-1], w, b, stride, padding)
            if i + 1 < len(weights):
                inputs.append(torch.sigmoid(pre))
        loss = ((pre - target_pre) ** 2).sum() * pre_scale
        delta = top_delta
        for i in range(len(weights) - 1, -1, -1):
            w, _, stride, padding = weights[i]
            gw, gb = shared[i]
            loss = loss + ((conv2d_weight(inputs[i], w.shape, delta, stride, padding) - gw) ** 2).sum() * scales[i][0]
            loss = loss + ((delta.sum(dim=(0, 2, 3)) - gb) ** 2).sum() * scales[i][1]
            if i:
                delta = conv2d_input(inputs[i].shape, w, delta, stride, padding) * inputs[i] * (1 - inputs[i])
        return loss + prior_weight * smooth_total_variation(x, smoothing)

    if start is None:
        x = torch.full(input_shape, 0.5, dtype=torch.float64, device=activation.device, requires_grad=True)
    else:
        x = start.detach().to(device=activation.device, dtype=torch.float64).clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [x], lr=1, max_iter=iterations, history_size=100, line_search_fn="strong_wolfe",
        tolerance_grad=1e-12, tolerance_change=1e-15,
    )
    evaluations = 0

    def closure() -> torch.Tensor:
        nonlocal evaluations
        optimizer.zero_grad()
        value = objective(x)
        value.backward()
        evaluations += 1
        if observer is not None and evaluations % 50 == 0:
            observer(StepReport(iteration=numbered_from + evaluations, loss=float(value.detach()),
                                images=x.detach().float().clamp(0, 1), objective="gradient fit + TV prior"))
        return value

    optimizer.step(closure)
    return x.detach(), evaluations


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
    full_in: tuple[int, ...],
    *,
    max_iterations: int,
    tolerance: float,
    forward_weight: float = 1.0,
    whiten: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Given sigmoid(conv(a)) and ∂L/∂(that) for a batch, recover a and ∂L/∂a (weight gradient shared)."""
    weight = conv.weight.detach().double()
    bias = conv.bias.detach().double()  # type: ignore[union-attr]
    stride, padding = conv.stride, conv.padding
    eps = 1e-6  # logit of a saturated sigmoid is unbounded; the clamp keeps the solve finite
    out = activation.clamp(eps, 1 - eps)
    pre = torch.log(out) - torch.log1p(-out)
    d_pre = d_activation * out * (1 - out)
    # Whiten the forward equations: an error e in a sigmoid output becomes e / (out (1 − out)) in its
    # logit, so each equation is weighted by out (1 − out); saturated outputs, whose logit the
    # update barely pins down, then count little instead of dominating the solve.
    slope = out * (1 - out) if whiten else torch.ones_like(out)
    forward_rhs = ((pre - bias.view(1, -1, 1, 1)) * slope).flatten()
    # Normalise both blocks, then weight the forward one by ``forward_weight``.
    w_forward = forward_weight * _balancing_weight(forward_rhs)
    # (Weighting these equations by their own fp16 rounding made it worse, 39.7 -> 15.9 dB on the tuning
    # photo imagenet_00: their error is mostly the one propagated from the layer above.)
    w_weight = _balancing_weight(g_weight)
    n_forward = forward_rhs.numel()
    rhs = torch.cat([forward_rhs * w_forward, (g_weight * w_weight).flatten()])

    def apply(v: torch.Tensor) -> torch.Tensor:
        a = v.view(full_in)
        return torch.cat([
            (F.conv2d(a, weight, None, stride, padding) * slope).flatten() * w_forward,
            (conv2d_weight(a, weight.shape, d_pre, stride, padding) * w_weight).flatten(),
        ])

    def adjoint(r: torch.Tensor) -> torch.Tensor:
        r_forward = r[:n_forward].view(pre.shape) * slope * w_forward
        r_weight = r[n_forward:].view(weight.shape) * w_weight
        return (
            conv2d_input(full_in, weight, r_forward, stride, padding)
            + conv2d_input(full_in, r_weight, d_pre, stride, padding)
        ).flatten()

    # Jacobi preconditioner: the diagonal of AᵀA, from two transposed convolutions.
    diag = (
        conv2d_input(full_in, weight**2, slope**2, stride, padding) * w_forward**2
        + conv2d_input(full_in, torch.ones_like(weight), d_pre**2, stride, padding) * w_weight**2
    ).flatten()
    inv_diag = 1.0 / diag.clamp_min(1e-300)
    solution, used = _cgls(apply, adjoint, rhs, inv_diag, torch.full_like(diag, 0.5), max_iterations, tolerance)
    a = solution.view(full_in)
    d_a = conv2d_input(full_in, weight, d_pre, stride, padding)
    return a, d_a, used


def _balancing_weight(block: torch.Tensor) -> float:
    """1/‖block‖, or 0 for a block that carries nothing usable (all zero, e.g. ``--defense prune:1``,
    or so large/small that the squared weight overflows a float): it then drops out of the system."""
    norm = float(block.norm())
    if not (math.isfinite(norm) and norm > 0) or not math.isfinite(norm**-2):
        return 0.0
    return 1.0 / norm


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
