"""Large-batch disaggregation through a first Linear → ReLU layer: refine, verify, deflate.

Below a sent Linear layer whose input is ``h = ReLU(W₁ x + b₁)`` (``W₁`` the model's first layer),
the update pins down each sample twice: its image lies in the B-dimensional row space of the
first layer's gradient (``x = V₁ a``), and its activations lie in the row space of the Linear
layer's gradient (``h ∈ span V``). For an image candidate ``a`` with active units ``S``, the
condition "``ReLU(W₁ V₁ a + b₁)`` lies in ``span V``" is *linear* in ``a``: on S the activation is
``W₁ V₁ a + b₁``, elsewhere 0, and its part outside ``span V`` must vanish (one least-squares solve
of ~1,000 equations for B unknowns; the bias fixes the scale). Solving, re-reading S from the new
``a`` and solving again converges in a few steps from anywhere within ~30% of a sample (measured
at B = 64 and 128) and stops exactly on it; a candidate is kept only when its activations lie in
the span to the update's precision.

Starts come first from the quietest rows of the layer's gradient (a unit that only one sample
activates has the row ``δ_b[i]·h_bᵀ/B``: that sample's activations, as R-GAP reads a row), then
from the cone's vertices (a linear program, as in :mod:`gradleak.attacks.spear`): at large B these
are mixtures of many samples, but many refine onto one of them. The same few
samples would keep winning, so every verified sample is **deflated**: its exact contribution
``δ_b h_bᵀ / B`` (``δ_b`` from a forward and backward pass of the found image, for each possible
label) is taken out of the layer's gradient, and the label for which the rank drops by one is the
sample's label. The remaining row space holds only the samples not found yet, so they are the only
fixed points left and the vertices become mixtures of fewer samples as the search goes on.

Example:
    >>> import torch
    >>> from gradleak.models.mlp import MLP
    >>> from gradleak.scenarios import FedSGD
    >>> _ = torch.manual_seed(0)
    >>> model = MLP(channels=1, image_size=8, num_classes=10, width=200)
    >>> images, labels = torch.rand(6, 1, 8, 8), torch.tensor([3, 1, 4, 1, 5, 9])
    >>> update = FedSGD().share(model, images, labels)
    >>> grads = dict(zip([n for n, _ in model.named_parameters()], update.tensors))
    >>> found = deflate_batch(model, model.layers[0], model.layers[2], grads["layers.0.weight"],
    ...                       grads["layers.2.weight"], batch=6, num_classes=10)
    >>> len(found.images), sorted(found.labels)
    (6, [1, 1, 3, 4, 5, 9])
    >>> errors = [float((images.flatten(1) - x).norm(dim=1).min()) for x in found.images]
    >>> max(errors) < 1e-4
    True
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from gradleak.attacks.spear_algebra import cone_vertex, top_singular


#: quietest rows of the remaining gradient tried as starts after each deflation
QUIET_ROWS = 80

#: remaining rank above which a failed refinement is retried annealed (below it the plain one
#: converges from most vertices: 64 of 74 at B = 64)
ANNEAL_ABOVE = 48


@dataclass
class Deflation:
    """What the deflating search found: images (flat, float64) with the labels that deflated them."""

    images: list[torch.Tensor]
    labels: list[int | None]  # None: the sample was verified but its contribution could not be removed
    linear_programs: int
    rank_gap: float  # s_{B+1}/s_B of the Linear layer's gradient: ~1e-7 exact, larger when perturbed
    tolerance: float  # relative residual below which a refined candidate counts as a sample


def refine_on_pattern(
    weights: np.ndarray, bias: np.ndarray, span: np.ndarray, coords: np.ndarray, *, iterations: int = 30,
    annealed: int = 0,
) -> tuple[np.ndarray, float]:
    """Image coordinates ``a`` with ``ReLU(weights·a + bias)`` in ``span`` (orthonormal columns), from a
    start nearby, and the relative part of those activations outside the span (~1e-7 on a sample).

    ``annealed`` first solves that many times with each unit weighted by how sure its side is
    (``|z| / (|z| + τ)``, τ shrinking from the median ``|z|``): at B = 128 this brought starts at 40%
    relative error onto a sample 10 times in 10 (3 in 10 without), at ~2× the cost.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> weights, bias = rng.standard_normal((300, 4)), rng.standard_normal(300) * 0.1
        >>> truth = rng.standard_normal((3, 4))
        >>> span = np.linalg.qr(np.maximum(truth @ weights.T + bias, 0).T)[0]
        >>> coords, residual = refine_on_pattern(weights, bias, span, truth[0] + 0.1 * rng.standard_normal(4))
        >>> bool(np.abs(coords - truth[0]).max() < 1e-9), residual < 1e-12
        (True, True)
    """
    # torch, not numpy, for the algebra: it keeps to the thread count set for torch (numpy's BLAS
    # took 0.1 s for one 1000×64 solve on a loaded 2-core machine, fighting its own threads).
    w, b, v, a = (torch.from_numpy(np.asarray(t, dtype=np.float64)) for t in (weights, bias, span, coords))
    for step in range(annealed):
        z = w @ a + b
        sure = (z.abs() / (z.abs() + z.abs().median() * 0.7**step))[:, None]
        masked = torch.cat([w, b[:, None]], dim=1) * (z > 0)[:, None]
        outside = (masked - v @ (v.T @ masked)) * sure
        a = -torch.linalg.lstsq(outside[:, :-1], outside[:, -1:]).solution.flatten()
    previous = None
    for _ in range(iterations):
        active = w @ a + b > 0
        if previous is not None and bool((active == previous).all()):
            break
        previous = active
        masked = torch.cat([w, b[:, None]], dim=1) * active[:, None]
        outside = masked - v @ (v.T @ masked)
        a = -torch.linalg.lstsq(outside[:, :-1], outside[:, -1:]).solution.flatten()
    h = torch.relu(w @ a + b)
    return a.numpy(), float((h - v @ (v.T @ h)).norm() / h.norm().clamp_min(1e-300))


class RemainingGradient:
    """The Linear layer's (mean) gradient with the found samples' contributions taken out, kept as
    ``U diag(S) Vᵀ`` of rank B − found."""

    def __init__(self, u: np.ndarray, s: np.ndarray, v: np.ndarray) -> None:
        self.u, self.s, self.v = u, s, v
        self.scale = float(s.max()) if s.size else 1.0

    def removal(self, deltas: np.ndarray, activations: np.ndarray) -> tuple[int, float, tuple[np.ndarray, ...]]:
        """For candidate output gradients ``deltas`` (one row per label) of a sample with ``activations``:
        the best row, how far removing ``δ hᵀ`` is from dropping the rank by one (~1e-7 when it is the
        sample's exact contribution), and the deflated factors.

        ``diag(S) − α βᵀ`` (α, β: δ and h in the factors' coordinates) is singular exactly when
        ``βᵀ S⁻¹ α = 1`` (the matrix determinant lemma), which ranks the labels in one product."""
        u, s, v = (torch.from_numpy(t) for t in (self.u, self.s, self.v))
        delta = torch.from_numpy(np.ascontiguousarray(deltas))
        beta = v.T @ torch.from_numpy(activations)
        alpha = u.T @ delta.T  # (rank, labels)
        outside = (delta.T - u @ alpha).norm(dim=0) / delta.norm(dim=1).clamp_min(1e-300)
        label = int((outside + (1 - (beta / s) @ alpha).abs()).argmin())
        left, values, right = torch.linalg.svd(torch.diag(s) - torch.outer(alpha[:, label], beta))
        score = float(outside[label]) + float(values[-1]) / self.scale
        return label, score, (left.numpy(), values.numpy(), right.numpy())

    def quietest_row(self, skip: set[int]) -> int | None:
        """The live row (output unit) with the smallest norm not in ``skip``, or None after the first
        ``QUIET_ROWS``. A unit active for one sample only has the row ``δ_b[i]·h_bᵀ/B``: that
        sample's activations (R-GAP's row read, at a layer); at B = 128, 49 of the 80 quietest rows
        of a CIFAR-10 batch refined onto a sample (31 different ones) without a linear program."""
        norms = np.linalg.norm(self.u * self.s, axis=1)
        order = np.argsort(norms)
        live = order[norms[order] > 1e-6 * norms.max()][:QUIET_ROWS]
        return next((int(i) for i in live if int(i) not in skip), None)

    def row(self, index: int) -> np.ndarray:
        """Row ``index`` of the remaining gradient, signed to be mostly positive (like activations)."""
        values = self.v @ (self.s * self.u[index])
        return values * np.sign(values.sum())

    def deflate(self, factors: tuple[np.ndarray, ...]) -> None:
        u, s, vh = factors
        self.u, self.s, self.v = self.u @ u[:, :-1], s[:-1], self.v @ vh[:-1].T


class SampleGradients:
    """Each label's output gradient of the Linear layer for one image (float64 copy of the model)."""

    def __init__(self, model: nn.Module, layer: nn.Module, num_classes: int, batch: int) -> None:
        name = next(n for n, m in model.named_modules() if m is layer)
        self.model = copy.deepcopy(model).cpu().double()
        self.layer = dict(self.model.named_modules())[name]
        self.num_classes, self.batch = num_classes, batch

    def __call__(self, image: torch.Tensor, input_shape: tuple[int, ...]) -> np.ndarray:
        outputs: list[torch.Tensor] = []
        hook = self.layer.register_forward_hook(lambda _m, _i, out: outputs.append(out))
        try:
            x = image.reshape(1, *input_shape).expand(self.num_classes, *input_shape)
            logits = self.model(x)
            loss = torch.nn.functional.cross_entropy(logits, torch.arange(self.num_classes), reduction="sum")
            (delta,) = torch.autograd.grad(loss, outputs[0])
        finally:
            hook.remove()
        return delta.detach().numpy() / self.batch  # the batch-mean loss: each sample's share is 1/B


def deflate_batch(
    model: nn.Module,
    first: nn.Linear,
    linear: nn.Linear,
    g_first: torch.Tensor,
    g_linear: torch.Tensor,
    *,
    batch: int,
    num_classes: int,
    input_shape: tuple[int, ...] | None = None,
    tolerance: float | None = None,
    max_programs: int | None = None,
    patience: int | None = None,
    seconds: float = float("inf"),
    seed: int = 0,
) -> Deflation:
    """The batch's images through ``first → ReLU → … linear`` from the two layers' (mean) gradients.

    Stops after ``max_programs`` linear programs (default 6·B + 20), ``patience`` programs in a row
    without a new sample (default 2·B + 10), or ``seconds``. ``tolerance`` (a defended update's,
    from its noise model) bounds the relative residual of an accepted sample."""
    start = time.perf_counter()
    input_shape = input_shape or (first.in_features,)
    _, _, v1h = top_singular(g_first.reshape(g_first.shape[0], -1), batch)
    image_span = v1h.T.numpy()  # (pixels, B): the batch's images lie in it
    weights = first.weight.detach().double().cpu().numpy() @ image_span
    bias = first.bias.detach().double().cpu().numpy()
    u, s, vh = top_singular(g_linear, batch + 1)
    rank_gap = float(s[batch] / s[batch - 1]) if batch < s.numel() and s[batch - 1] > 0 else 0.0
    floor = float(s[batch] / s[0]) if batch < s.numel() and s[0] > 0 else 0.0
    accept = tolerance if tolerance is not None else max(1e-5, 10 * floor)
    remaining = RemainingGradient(u[:, :batch].numpy(), s[:batch].numpy(), vh[:batch].T.numpy())
    sample_gradients = SampleGradients(model, linear, num_classes, batch)
    rng = np.random.default_rng(seed)
    images: list[torch.Tensor] = []
    coords_found: list[np.ndarray] = []
    labels: list[int | None] = []
    budget = max_programs if max_programs is not None else 6 * batch + 20
    patience = patience if patience is not None else 2 * batch + 10
    programs = last_new = 0
    tried: set[int] = set()  # rows of the remaining gradient tried since the last deflation
    # Under noise a rarely active unit's row is what the noise hides first: vertices only.
    use_rows = tolerance is None
    while (len(images) < batch and remaining.v.shape[1] > 0 and programs < budget and programs - last_new < patience
           and time.perf_counter() - start < seconds):
        row = remaining.quietest_row(tried) if use_rows else None
        if row is not None:  # at most QUIET_ROWS per deflation: not counted as programs
            tried.add(row)
            start_coords = _start_from_activations(remaining.row(row), weights, bias)
            retry = False
        else:  # every quiet row tried: a cone vertex of the remaining span
            programs += 1
            start_coords = _candidate(remaining.v, weights, bias, rng, accept)
            retry = remaining.v.shape[1] > ANNEAL_ABOVE
        if start_coords is None:
            continue
        coords, residual = refine_on_pattern(weights, bias, remaining.v, start_coords)
        if residual > accept and retry:
            coords, residual = refine_on_pattern(weights, bias, remaining.v, start_coords, annealed=40)
        if residual > accept or any(np.linalg.norm(coords - c) <= 1e-4 * np.linalg.norm(c) for c in coords_found):
            continue
        image = torch.from_numpy(image_span @ coords)
        activations = np.maximum(weights @ coords + bias, 0)
        label, score, factors = remaining.removal(sample_gradients(image, input_shape), activations)
        # A verified sample whose contribution does not come out cleanly (FedAvg's several steps,
        # noise) stays in the span: it is kept, and the duplicate test above skips it next time.
        if score <= max(1e-4, 100 * floor):
            remaining.deflate(factors)
            labels.append(label)
            tried.clear()
        else:
            labels.append(None)
        images.append(image)
        coords_found.append(coords)
        last_new = programs
    return Deflation(images, labels, programs, rank_gap, accept)


def _candidate(
    span: np.ndarray, weights: np.ndarray, bias: np.ndarray, rng: np.random.Generator, tolerance: float
) -> np.ndarray | None:
    """Image coordinates to refine from: a cone vertex of the remaining span (the most relative
    activation on a random live unit), read back through the first layer on its active units."""
    dim = span.shape[1]
    if dim == 1:  # one sample left: the span is its activations
        activations = span[:, 0] * np.sign(span[:, 0].sum())
    else:
        norms = np.linalg.norm(span, axis=1)
        unit = rng.choice(np.nonzero(norms > 0.05 * norms.max())[0])
        objective = span[unit] + 1e-3 * norms[unit] * rng.standard_normal(dim)
        vertex = cone_vertex(span, objective, tolerance)  # zeros are as exact as the span
        if vertex is None:
            return None
        activations = span @ vertex
    return _start_from_activations(activations, weights, bias)


def _start_from_activations(activations: np.ndarray, weights: np.ndarray, bias: np.ndarray) -> np.ndarray | None:
    """Image coordinates whose first-layer activations fit ``activations`` (any scale) on its active units."""
    active = activations > 1e-6 * np.abs(activations).max()
    if active.sum() <= weights.shape[1]:
        return None
    # The vertex's scale is arbitrary: fit activations ≈ t·(W a + b) on the active units, a = a'/t.
    system = torch.from_numpy(np.hstack([weights[active], bias[active, None]]))
    solution = torch.linalg.lstsq(system, torch.from_numpy(activations[active])[:, None]).solution.flatten().numpy()
    return solution[:-1] / solution[-1] if abs(solution[-1]) > 1e-12 else solution[:-1]
