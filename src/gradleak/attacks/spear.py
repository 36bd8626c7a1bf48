"""Exact batch disaggregation through a fully connected ReLU layer (SPEAR-class), polynomial.

For a Linear layer whose input is a ReLU output ``h_b ≥ 0`` (zero on every inactive unit, about
half of them), the batch-mean weight gradient is ``G = (1/B)·Σ_b δ_b h_bᵀ``: rank B, its row space
spanned by the batch's activations. With ``G = U S Vᵀ`` (top B), each ``h_b = V p_b`` lies in the
cone ``C = {p : V p ≥ 0}`` and, having hundreds of zeros whose rows span B − 1 dimensions, is an
*extreme ray* of it (SPEAR's sparsity, Dimitrov et al. 2024, read as a cone). Extreme rays are
vertices of the polytope ``{p : V p ≥ 0, 1ᵀ V p = 1}``, which a linear program finds in polynomial
time; the objective "most relative activation on unit j", for a unit no sample found so far uses,
leads to a new sample each time. A vertex is accepted only when it is *degenerate in the right
way*: far more zero rows than B − 1, spanning exactly B − 1 dimensions, none of them essential (a
mixture of two samples leaves vertices whose zero rows lose rank when one row is dropped). The
layer's bias gradient fixes each scale: ``g = U S P⁻ᵀ 1`` gives ``p_bᵀ w = 1`` with
``w = S⁻¹ Uᵀ g``, one sample at a time.

The activations ``h_b = ReLU(W₁ x_b + b₁)`` then give the images: for a first Linear layer, ``x_b``
lies in the row space of its own weight gradient (B dimensions) and the active units are hundreds
of linear equations for those B coordinates; for a first convolution, its active outputs
overdetermine the image (a least-squares solve). Labels follow from the head: with the images
known, ``Σ_b onehot(y_b) f_bᵀ = Σ_b softmax_b f_bᵀ − B·∂W_head`` is linear in the one-hot rows.

A result is accepted only when it reproduces the shared update (relative error below
``accept_error``); otherwise the attack says how many samples it recovered exactly and hands the
others to Inverting Gradients, keeping the exact ones.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from gradleak.attacks.base import ATTACKS, AttackContext, BaseAttack, model_device
from gradleak.attacks.labels import restore_batch_labels
from gradleak.errors import GradleakError
from gradleak.scenarios import cross_entropy_for_soft_labels, functional_forward, one_hot
from gradleak.types import AttackResult, SharedUpdate, StepObserver, StepReport


@dataclass(frozen=True)
class ReluLinearChain:
    """``below → ReLU → linear`` in a model: ``below`` (Linear or Conv2d) is the model's first layer."""

    below: nn.Module
    linear: nn.Linear
    head: nn.Linear


def find_relu_linear_chain(model: nn.Module) -> ReluLinearChain | str:
    """The model's first ``(Linear|Conv2d) → ReLU → Linear`` chain starting at its input, else why not.

    Example:
        >>> from gradleak.models.mlp import MLP
        >>> chain = find_relu_linear_chain(MLP(width=16))
        >>> chain.linear.in_features, chain.head.out_features
        (16, 10)
        >>> find_relu_linear_chain(nn.Sequential(nn.Linear(4, 4), nn.Sigmoid(), nn.Linear(4, 2)))
        'the first layer is not followed by a ReLU'
    """
    leaves = [m for m in model.modules() if len(list(m.children())) == 0]
    if len(leaves) < 3 or not isinstance(leaves[-1], nn.Linear):
        return "the model does not end in a Linear layer"
    below, act, linear = leaves[0], leaves[1], leaves[2]
    if not isinstance(below, (nn.Linear, nn.Conv2d)) or below.bias is None:
        return "the first layer is not a Linear or Conv2d layer with bias"
    if not isinstance(act, nn.ReLU):
        return "the first layer is not followed by a ReLU"
    if not isinstance(linear, nn.Linear) or linear.bias is None:
        return "the first ReLU does not feed a Linear layer with bias"
    return ReluLinearChain(below=below, linear=linear, head=leaves[-1])


def shared_tensor_of(model: nn.Module, update: SharedUpdate, parameter: nn.Parameter) -> torch.Tensor:
    """The update's tensor for ``parameter`` (by position, or by name when the update names them)."""
    named = list(model.named_parameters())
    names = update.parameter_names or tuple(n for n, _ in named)
    name = next(n for n, p in named if p is parameter)
    if name not in names:
        raise GradleakError(f"the update does not carry {name}'s gradient: the disaggregation needs it (use --attack ig)")
    return update.tensors[names.index(name)]


def as_mean_gradient(update: SharedUpdate, tensor: torch.Tensor) -> torch.Tensor:
    """A gradient-like view of a shared tensor: FedAvg's change −η·Σ_t g_t becomes the mean step gradient."""
    tensor = tensor.detach().double().cpu()
    if update.kind == "weight_delta":
        return -tensor / (float(update.local_lr or 1.0) * update.local_steps)
    return tensor


@dataclass
class Disaggregation:
    """What the disaggregation found: each recovered sample's activations and how it was judged."""

    activations: list[torch.Tensor]  # (in_features,) per recovered sample, scaled, float64
    basis: torch.Tensor  # (in_features, B): the gradient's row space, which holds every sample's activations
    linear_programs: int
    rank_gap: float  # s_{B+1}/s_B of the layer's weight gradient: ~1e-7 exact, larger when perturbed
    zero_tolerance: float


def disaggregate_relu_inputs(
    g_weight: torch.Tensor,
    g_bias: torch.Tensor,
    batch: int,
    *,
    zero_tolerance: float | None = None,
    max_programs: int | None = None,
    seed: int = 0,
    seconds: float = float("inf"),
    patience: int | None = None,
    enough: int | None = None,
) -> Disaggregation:
    """The non-negative sparse inputs of a Linear layer, one per sample, from its (mean) gradients.

    The search stops after ``max_programs`` linear programs (default 4·B + 20), ``seconds``, ``patience``
    programs in a row without a new sample (default B + 10), or once ``enough`` samples are found.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> h = torch.relu(torch.randn(4, 60, dtype=torch.float64))  # 4 ReLU outputs
        >>> delta = torch.randn(4, 7, dtype=torch.float64)
        >>> found = disaggregate_relu_inputs(delta.T @ h / 4, delta.sum(0) / 4, 4)
        >>> len(found.activations)
        4
        >>> err = min(float((found.activations[0] - h[i]).abs().max()) for i in range(4))
        >>> err < 1e-9
        True
    """
    from scipy.optimize import linprog

    start = time.perf_counter()
    u, s, vh = top_singular(g_weight, batch + 1)
    if batch > min(g_weight.shape):
        raise GradleakError(
            f"a batch of {batch} is larger than the layer's gradient rank can be ({s.numel()}): "
            "its samples cannot be separated at this layer"
        )
    rank_gap = float(s[batch] / s[batch - 1]) if batch < s.numel() and s[batch - 1] > 0 else 0.0
    # Zero rows of an activation are as exact as the span: their error is ~ what lies beyond rank B
    # (float32 rounding: s_{B+1}/s_1 ~ 2e-8 gave errors ~1e-7 of max|h| at batch 64), far below the
    # smallest active values (~1e-3, rarely 5e-6 of the largest).
    floor = float(s[batch] / s[0]) if batch < s.numel() and s[0] > 0 else 0.0
    tolerance = zero_tolerance if zero_tolerance is not None else max(1e-6, 10 * floor)
    basis = vh[:batch].T.numpy()  # (in, B): h = basis @ p
    scale_row = ((u[:, :batch].T @ g_bias.double()) / s[:batch]).numpy()  # w: p_bᵀ w = 1
    norms = np.linalg.norm(basis, axis=1)
    live = norms > min(0.05, 100 * tolerance) * norms.max()  # a unit no sample activates has a row of noise
    found: list[np.ndarray] = []
    rng = np.random.default_rng(seed)
    programs = 0
    budget = max_programs if max_programs is not None else 4 * batch + 20
    sum_row = basis.sum(axis=0)
    patience = patience if patience is not None else batch + 10
    enough = enough if enough is not None else batch
    last_new = 0
    while len(found) < enough and programs < budget and programs - last_new < patience and time.perf_counter() - start < seconds:
        programs += 1
        covered = np.zeros(basis.shape[0], dtype=bool)
        for p in found:
            h = basis @ p
            covered |= h > tolerance * h.max()
        pool = np.nonzero(live & ~covered)[0]
        noise = rng.standard_normal(batch)
        if len(pool):  # the most relative activation on a unit no recovered sample uses
            row = basis[rng.choice(pool)]
        elif found and programs % 2:
            # Deflated: a unit's row with the recovered samples' directions projected out scores 0
            # on every recovered vertex, so the best vertex is a new one. Units with the most
            # unexplained weight are drawn most often.
            recovered = np.linalg.qr(np.stack(found, 1))[0]
            deflated = basis - (basis @ recovered) @ recovered.T
            weight = (deflated**2).sum(axis=1)
            row = deflated[rng.choice(len(weight), p=weight / weight.sum())]
        elif programs % 2 == 0 and live.any():  # the most relative activation on any unit
            row = basis[rng.choice(np.nonzero(live)[0])]
        else:
            row = -noise
        objective = -row + 1e-3 * np.linalg.norm(row) * noise
        result = linprog(objective, A_ub=-basis, b_ub=np.full(basis.shape[0], tolerance / basis.shape[0]),
                         A_eq=sum_row[None], b_eq=[1.0], bounds=[(None, None)] * batch, method="highs")
        if result.status != 0:
            continue
        p = _accept_vertex(basis, result.x, batch, tolerance)
        if p is None or any(abs(float(p @ q)) > 1 - 1e-6 for q in found):
            continue
        found.append(p)
        last_new = programs
    activations = []
    for p in found:
        denominator = float(p @ scale_row)
        if abs(denominator) < 1e-300:
            continue
        h = torch.from_numpy(basis @ (p / denominator))
        activations.append(torch.where(h > tolerance * h.abs().max(), h, torch.zeros_like(h)))
    return Disaggregation(activations, torch.from_numpy(basis), programs, rank_gap, tolerance)


def top_singular(matrix: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The top ``k`` singular triplets (U, S, Vᵀ) in float64: a randomised range finder with power
    iterations when ``k`` is small against the matrix (an update of rank B has a gap of ~1e7 after
    its B-th value, so four iterations give the span to machine precision), else the full SVD."""
    matrix = matrix.double()
    k = min(k, *matrix.shape)
    if k + 10 >= min(matrix.shape) // 2:
        u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
        return u[:, :k], s[:k], vh[:k]
    generator = torch.Generator().manual_seed(0)
    sketch = matrix @ torch.randn(matrix.shape[1], k + 10, generator=generator, dtype=torch.float64)
    for _ in range(4):
        sketch = torch.linalg.qr(sketch).Q
        sketch = matrix @ torch.linalg.qr(matrix.T @ sketch).Q
    basis = torch.linalg.qr(sketch).Q
    u, s, vh = torch.linalg.svd(basis.T @ matrix, full_matrices=False)
    return (basis @ u)[:, :k], s[:k], vh[:k]


def _accept_vertex(basis: np.ndarray, x: np.ndarray, batch: int, tolerance: float) -> np.ndarray | None:
    """The exact extreme ray near an LP vertex if it is one sample's activations, else None.

    One sample: many zero rows spanning exactly B − 1 dimensions with no row essential to that span
    (a vertex cut out of a two-sample face by one extra row is not). The direction is re-solved as
    the null vector of the zero rows (the LP's own precision is ~1e-7)."""
    p = x / np.linalg.norm(x)
    zero = np.zeros(basis.shape[0], dtype=bool)
    for _ in range(3):
        h = basis @ p
        zero = np.abs(h) <= tolerance * np.abs(h).max()
        if zero.sum() < batch - 1 + max(4, batch // 4):
            return None
        left, sv, right = np.linalg.svd(basis[zero], full_matrices=False)
        p = right[-1] * np.sign((basis @ right[-1]).sum())
    if batch == 1:
        return p
    if sv[-1] > 10 * tolerance * sv[0] or sv[-2] < 30 * max(sv[-1], tolerance * sv[0]):
        return None  # not a single null direction: no sample, or a mixture of two
    leverage = (left[:, : batch - 1] ** 2).sum(axis=1)
    if leverage.max() > 0.99:
        return None
    h = basis @ p
    if (h < -tolerance * 10 * h.max()).any():
        return None
    return p


def complete_last_sample(
    chain: ReluLinearChain, found: Disaggregation, images: torch.Tensor, g_below: torch.Tensor, batch: int
) -> torch.Tensor | None:
    """The one sample the search missed, when all others are known (first layer Linear), else None.

    At the first layer ``G₁ = U₁ diag(s₁) V₁ᵀ = Σ_b δ_b x_bᵀ`` with ``δ_b = U₁ q_b`` zero on the units
    sample b leaves inactive (known for the recovered samples: SPEAR's null vector of those rows of
    U₁) and ``x_b = V₁ a_b``; so ``diag(s₁) = Σ_b q_b a_bᵀ``, and a vector y orthogonal to every
    recovered q_b gives ``diag(s₁) y ∝ a_missing``. Its scale is the one at which
    ``ReLU(W₁ x + b₁)`` lies in the next layer's row space (a one-dimensional search)."""
    if not isinstance(chain.below, nn.Linear) or len(found.activations) != batch - 1 or batch < 2:
        return None
    u1, s1, v1h = top_singular(g_below, batch)
    directions = []
    for h in found.activations:
        inactive = h <= 0
        if int(inactive.sum()) < batch - 1:
            return None
        directions.append(torch.linalg.svd(u1[inactive], full_matrices=False).Vh[-1])
    y = torch.linalg.svd(torch.stack(directions, 1), full_matrices=True).U[:, -1]
    x_hat = v1h.T @ (s1 * y)
    weight, bias = chain.below.weight.detach().double().cpu(), chain.below.bias.detach().double().cpu()
    basis = found.basis

    def misfit(t: float) -> float:
        h = torch.relu(t * (weight @ x_hat) + bias)
        return float((h - basis @ (basis.T @ h)).norm() / h.norm().clamp_min(1e-300))

    typical = float(images.flatten(1).norm(dim=1).median()) / float(x_hat.norm())
    grid = [sign * typical * 10 ** (e / 40) for sign in (1.0, -1.0) for e in range(-80, 81)]
    best = min(grid, key=misfit)
    low, high = best * 10 ** (-1 / 40), best * 10 ** (1 / 40)
    for _ in range(80):  # golden-section search in the bracket around the best grid point
        a, b = low + 0.382 * (high - low), low + 0.618 * (high - low)
        if misfit(a) < misfit(b):
            high = b
        else:
            low = a
    x = (low + high) / 2 * x_hat
    # The direction is only as precise as the recovered nulls (~1e-4): polish on its ReLU pattern,
    # where h = V₂ p and x = V₁ a make "h = W₁x + b₁ on active units, 0 elsewhere" linear.
    span = v1h.T
    for _ in range(3):
        active = weight @ x + bias > 0
        system = torch.zeros(weight.shape[0], 2 * batch, dtype=torch.float64)
        system[:, :batch] = basis
        system[active, batch:] = -(weight[active] @ span)
        rhs = torch.where(active, bias, torch.zeros_like(bias))
        solution = torch.linalg.lstsq(system, rhs[:, None]).solution.flatten()
        x = span @ solution[batch:]
    h = torch.relu(weight @ x + bias)
    if float((h - basis @ (basis.T @ h)).norm() / h.norm().clamp_min(1e-300)) > max(1e-5, 10 * found.zero_tolerance):
        return None
    return x.reshape(images.shape[1:])


def images_from_activations(
    chain: ReluLinearChain, activations: torch.Tensor, g_below: torch.Tensor | None, input_shape: tuple[int, int, int],
    *, batch: int, iterations: int = 3000,
) -> torch.Tensor:
    """Images (n, C, H, W) whose first layer gives ``activations`` (n, features) on its active units.

    A first Linear layer: the image lies in the row space of its own weight gradient ``g_below``,
    so the active units' equations ``W₁[act] x = h[act] − b₁[act]`` need only B coordinates (least
    squares). A first convolution: its active outputs overdetermine the image (CGLS, float64)."""
    below = chain.below
    weight, bias = below.weight.detach().double().cpu(), below.bias.detach().double().cpu()
    if isinstance(below, nn.Linear):
        assert g_below is not None
        _, _, vh = top_singular(g_below, batch)
        span = vh[:batch].T  # (inputs, B): the batch's images lie in this span
        images = []
        for h in activations:
            active = h > 0
            coords = torch.linalg.lstsq((weight[active] @ span), (h[active] - bias[active])[:, None]).solution
            images.append((span @ coords).flatten())
        return torch.stack(images).reshape(-1, *input_shape)
    conv = below
    out = activations.reshape(activations.shape[0], conv.out_channels, *_conv_out_hw(conv, input_shape))
    mask = (out > 0).double()
    target = (out - bias[None, :, None, None]) * mask

    def apply(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(x, weight, None, conv.stride, conv.padding) * mask

    def adjoint(r: torch.Tensor) -> torch.Tensor:
        return torch.nn.grad.conv2d_input((r.shape[0], *input_shape), weight, r * mask, conv.stride, conv.padding)

    x = torch.zeros(out.shape[0], *input_shape, dtype=torch.float64)
    residual = target - apply(x)
    direction = adjoint(residual)
    gradient_norm = (direction**2).sum()
    for _ in range(iterations):  # CGLS on the normal equations of the active outputs
        step_image = apply(direction)
        alpha = gradient_norm / (step_image**2).sum().clamp_min(1e-300)
        x = x + alpha * direction
        residual = residual - alpha * step_image
        gradient = adjoint(residual)
        new_norm = (gradient**2).sum()
        if float(new_norm) < 1e-28 * max(float((target**2).sum()), 1e-300):
            break
        direction = gradient + new_norm / gradient_norm * direction
        gradient_norm = new_norm
    return x


def _conv_out_hw(conv: nn.Conv2d, input_shape: tuple[int, int, int]) -> tuple[int, int]:
    probe = torch.nn.functional.conv2d(torch.zeros(1, *input_shape, dtype=conv.weight.dtype), conv.weight.detach(), None,
                                       conv.stride, conv.padding)
    return int(probe.shape[2]), int(probe.shape[3])


def labels_from_head(model: nn.Module, head: nn.Linear, update: SharedUpdate, images: torch.Tensor) -> torch.Tensor:
    """Each image's label from the head's gradient, the images known (a linear solve, then argmax).

    ``B·∂W_head = Σ_b (softmax_b − onehot_b) f_bᵀ``, so ``Σ_b onehot_b f_bᵀ = Σ_b softmax_b f_bᵀ −
    B·∂W_head``; the head's inputs f_b have rank B, so the one-hot rows follow by least squares."""
    captured: list[torch.Tensor] = []
    hook = head.register_forward_hook(lambda _m, inputs, _o: captured.append(inputs[0].detach()))
    try:
        with torch.no_grad():
            logits = model(images.to(model_device(model)).float())
    finally:
        hook.remove()
    features = captured[0].double().cpu()
    softmax = torch.softmax(logits.double().cpu(), dim=-1)
    g_head = as_mean_gradient(update, shared_tensor_of(model, update, head.weight))
    batch = update.batch_size
    onehot_times_features = softmax.T @ features - batch * g_head  # (K, F)
    onehots = torch.linalg.lstsq(features.T, onehot_times_features.T).solution  # (n, K)
    return onehots.argmax(dim=1)


def replay_error(model: nn.Module, update: SharedUpdate, images: torch.Tensor, labels: torch.Tensor) -> float:
    """‖update(x̂, ŷ) − shared‖² / ‖shared‖² over every shared tensor: FedSGD's gradient or FedAvg's
    full-batch local steps replayed (the server knows their count and rate)."""
    device = model_device(model)
    names = [n for n, _ in model.named_parameters()]
    sent = update.parameter_names or tuple(names)
    params = [p.detach() for p in model.parameters()]
    targets = one_hot(labels.to(device), update.num_classes)
    x = images.to(device=device, dtype=params[0].dtype)
    weights = [p.clone().requires_grad_(True) for p in params]
    steps = update.local_steps if update.kind == "weight_delta" else 1
    grads: tuple[torch.Tensor, ...] = ()
    for _ in range(steps):
        loss = cross_entropy_for_soft_labels(functional_forward(model, weights, x), targets)
        grads = torch.autograd.grad(loss, weights)
        if update.kind == "weight_delta":
            weights = [(w - float(update.local_lr) * g).detach().requires_grad_(True) for w, g in zip(weights, grads)]
    mine = grads if update.kind == "gradient" else tuple(w.detach() - p for w, p in zip(weights, params))
    by_name = dict(zip(names, mine))
    num = sum(float(((by_name[n].double() - t.to(device).double()) ** 2).sum()) for n, t in zip(sent, update.tensors))
    den = sum(float((t.double() ** 2).sum()) for t in update.tensors)
    return num / max(den, 1e-300)


@dataclass
class Spear(BaseAttack):
    """Exact disaggregation of a batch through a ``(Linear|Conv2d) → ReLU → Linear`` model.

    Example:
        >>> import torch
        >>> from gradleak.models.mlp import MLP
        >>> from gradleak.scenarios import FedSGD
        >>> _ = torch.manual_seed(0)
        >>> model = MLP(channels=1, image_size=8, num_classes=10, width=200)
        >>> secret = torch.rand(3, 1, 8, 8)
        >>> result = Spear().run(model, FedSGD().share(model, secret, torch.tensor([1, 5, 5])))
        >>> result.extras["samples_exact"], sorted(result.labels.tolist())
        (3.0, [1, 5, 5])
    """

    iterations: int = 2000  # Inverting Gradients' budget for samples the disaggregation misses
    accept_error: float = 1e-6  # relative update error below which the recovered batch is accepted
    zero_tolerance: float | None = None  # None: from the gradient's rank gap (or the noise model)
    max_programs: int | None = None  # linear programs at most (None: 4·B + 20)
    time_limit: float = 600.0  # seconds for the search at most
    seed: int = 0
    tv_weight: float = 1e-4  # for the Inverting Gradients hand-over
    clamp: bool = True
    restarts: int = 1
    name: str = "spear"
    fallback: bool = field(default=True)  # hand missed samples to Inverting Gradients

    def check(self, update: SharedUpdate, model: nn.Module | None = None) -> None:
        if update.kind == "weight_delta" and not update.local_lr:
            raise GradleakError("a FedAvg weight change needs the client's learning rate (--local-lr)")
        if update.clients > 1:
            raise GradleakError("spear disaggregates one client's batch: under secure aggregation use --attack ig")
        if model is not None:
            chain = find_relu_linear_chain(model)
            if isinstance(chain, str):
                raise GradleakError(f"attack 'spear' needs a (Linear|Conv2d) → ReLU → Linear model, but {chain}: use --model mlp or convfc, or --attack ig")
            width = chain.linear.in_features
            if update.batch_size > width:
                raise GradleakError(
                    f"a batch of {update.batch_size} exceeds the {width} units of the ReLU layer: its gradient has rank "
                    f"at most {width} and cannot separate the samples (use a batch of at most {width // 2}, or --attack ig)"
                )

    def reconstruct(self, model: nn.Module, update: SharedUpdate, context: AttackContext) -> AttackResult:
        generator, observer = context.generator, context.observer
        chain = find_relu_linear_chain(model)
        assert not isinstance(chain, str)
        batch = update.batch_size
        g_weight = as_mean_gradient(update, shared_tensor_of(model, update, chain.linear.weight))
        g_bias = as_mean_gradient(update, shared_tensor_of(model, update, chain.linear.bias))
        tolerance, noise_to_signal = _noise_tolerance(model, update, chain, g_weight)
        tolerance = self.zero_tolerance if self.zero_tolerance is not None else tolerance
        # With a Linear first layer the last sample follows from the others (complete_last_sample).
        enough = batch - 1 if isinstance(chain.below, nn.Linear) and batch > 1 else batch
        found = disaggregate_relu_inputs(
            g_weight, g_bias, batch, zero_tolerance=tolerance, max_programs=self.max_programs, seed=self.seed,
            seconds=self.time_limit, enough=enough,
        )
        g_below = (
            as_mean_gradient(update, shared_tensor_of(model, update, chain.below.weight)).reshape(chain.below.weight.shape[0], -1)
            if isinstance(chain.below, nn.Linear) else None
        )
        count = len(found.activations)
        shape = tuple(update.input_shape)
        if count:
            exact_images = images_from_activations(chain, torch.stack(found.activations), g_below, shape, batch=batch)  # type: ignore[arg-type]
        else:
            exact_images = torch.zeros(0, *shape, dtype=torch.float64)
        if count == batch - 1 and g_below is not None:
            last = complete_last_sample(chain, found, exact_images, g_below, batch)
            if last is not None:
                exact_images = torch.cat([exact_images, last[None]])
                count = batch
        images = torch.full((batch, *shape), 0.5, dtype=torch.float64)
        images[:count] = exact_images
        images32 = images.float().clamp(0, 1)
        labels = labels_from_head(model, chain.head, update, images32) if count == batch else _partial_labels(model, chain, update, images32, count)
        error = replay_error(model, update, images32, labels)
        extras = {
            "samples_exact": float(count) if error <= self.accept_error or count < batch else 0.0,
            "linear_programs": float(found.linear_programs),
            "rank_gap": found.rank_gap,
            "zero_tolerance": found.zero_tolerance,
            "relative_update_error": error,
            **({"noise_to_signal": noise_to_signal} if noise_to_signal is not None else {}),
        }
        if count == batch and error <= self.accept_error:
            reason = (f"disaggregated all {batch} samples at the ReLU layer ({found.linear_programs} linear programs); "
                      f"accepted: they reproduce the shared update (relative error {error:.1e})")
        elif count == batch:
            reason = (f"disaggregated {batch} candidate samples but they do not reproduce the shared update (relative error "
                      f"{error:.1e} > {self.accept_error:g}): not accepted as exact (the update looks perturbed)")
            extras["samples_exact"] = 0.0
        else:
            from gradleak.attacks.identifiability import identifiability

            bound = identifiability(model, shape, batch, sent=update.parameter_names).largest_exact_batch  # type: ignore[arg-type]
            if batch > bound:
                why = (f"a batch of {batch} is beyond the {bound} this model's ReLU layer can separate (each sample "
                       "needs B − 1 independent inactive units, about half of them are)")
            elif noise_to_signal is not None and noise_to_signal >= 0.1:
                why = (f"the defense's noise (expected spectral norm {noise_to_signal:.2g}× the batch's smallest "
                       "singular value at that layer) hides the samples' row space")
            else:
                why = "the others are not extreme rays the search reached (see benchmarks/RESULTS.md)"
            reason = (f"recovered {count} of {batch} samples exactly ({found.linear_programs} linear programs, rank gap "
                      f"{found.rank_gap:.1e}); {why}")
        if observer is not None:
            observer(StepReport(iteration=1, loss=error, images=images32))
        result = AttackResult(images=images32, labels=labels, losses=[error], iterations=1,
                              stop_reason=reason, extras=extras)
        if count < batch and self.fallback:
            return self._hand_over(model, update, result, count, generator, observer, reason)
        return result

    def _hand_over(
        self, model: nn.Module, update: SharedUpdate, exact: AttackResult, count: int,
        generator: torch.Generator | None, observer: StepObserver | None, reason: str,
    ) -> AttackResult:
        """Inverting Gradients for the samples not recovered; the exact ones are kept as found."""
        from gradleak.attacks.ig import InvertingGradients

        ig = InvertingGradients(iterations=self.iterations, tv_weight=self.tv_weight, restarts=self.restarts, init=exact.images)
        result = ig.run(model, update, generator=generator, observer=observer)
        images = result.images.clone()
        images[:count] = exact.images[:count]
        result.images = images
        result.extras.update(exact.extras)
        result.extras["relative_update_error"] = replay_error(model, update, images, result.labels)
        result.stop_reason = f"{reason}; Inverting Gradients ran for them ({result.stop_reason})"
        return result


def _partial_labels(model: nn.Module, chain: ReluLinearChain, update: SharedUpdate, images: torch.Tensor, count: int) -> torch.Tensor:
    """Labels when only ``count`` samples were recovered: the restored label multiset, the exact
    samples' labels read from the head first (approximate: the missing samples' terms are unknown)."""
    restored = restore_batch_labels(update).tolist()
    if count == 0:
        return torch.tensor(restored)
    guess = labels_from_head(model, chain.head, update, images[:count]).tolist()
    rest = list(restored)
    for label in guess:
        if label in rest:
            rest.remove(label)
    return torch.tensor(guess + rest[: update.batch_size - count] + [guess[0]] * max(0, update.batch_size - count - len(rest)))


def _noise_tolerance(
    model: nn.Module, update: SharedUpdate, chain: ReluLinearChain, g_weight: torch.Tensor
) -> tuple[float | None, float | None]:
    """(relative zero tolerance, expected noise / the batch's smallest singular value) from the
    published or estimated noise model; (None, None) for an undefended update.

    i.i.d. noise of variance v on an m×n gradient has spectral norm ≈ √v (√m + √n): when that
    reaches the B-th singular value of the layer's gradient, the batch's row space is lost."""
    if not update.defenses:
        return None, None
    from gradleak.attacks.noise_model import noise_model

    noise = noise_model(update, source="auto")
    names = update.parameter_names or tuple(n for n, _ in model.named_parameters())
    name = next(n for n, p in model.named_parameters() if p is chain.linear.weight)
    variance = float(noise.variances[names.index(name)].double().mean())
    if update.kind == "weight_delta":
        variance /= (float(update.local_lr or 1.0) * update.local_steps) ** 2
    if variance <= 0:
        return None, None
    _, s, _ = top_singular(g_weight, update.batch_size)
    rows, cols = g_weight.shape
    expected = variance**0.5 * (rows**0.5 + cols**0.5)
    tolerance = float(min(0.5, max(1e-6, 10 * expected / max(float(s[0]), 1e-300))))
    return tolerance, expected / max(float(s[-1]), 1e-300)


ATTACKS.register("spear", Spear)
