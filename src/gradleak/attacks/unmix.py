"""Un-mixing a batch at the Linear head: each sample's features and label from the summed gradient.

With cross entropy averaged over a batch of B, the head's gradients are
``B·∂W = Σ_b g_b h_bᵀ`` and ``B·∂c = Σ_b g_b`` with ``g_b = softmax(W h_b + c) − onehot(y_b)``.
So ``∂W`` has rank B and its row space is spanned by the features: ``h_b = V a_b`` with V the top
B right singular vectors. What is left is a small nonlinear system in the B×B coefficients
(``100·B + 100`` equations for ``B²`` unknowns with 100 classes), solved by Levenberg–Marquardt.

The labels come with it. The sign of ``∂c`` finds every class with ``Σ_b p_bc < count_c`` but misses
a present class the model already predicts with high probability, and cannot tell a repeated label
from such a class. Each plausible multiset of labels is therefore tried, and the one whose features
explain the gradient best is kept: a wrong multiset leaves a large residual, the right one ~1e-7.
No ground truth is used: only the shared gradient and the (public) model.

A batch larger than the class count K (100 MNIST images) reveals only a rank-K view of its
features at the head: they are solved for in that row space, with the labels' bias-corrected
counts, and the layers below (and the analytic attack's end-to-end refinement) do the rest.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.func import jacfwd

#: up to this many unknowns (batch x rank) the Jacobian is formed (jacfwd, a dense solve); above,
#: its products only (memory linear in the batch). MNIST's batch of 100 (1,000 unknowns) stays dense.
DENSE_UNKNOWNS = 1024

from gradleak.attacks.labels import allocate_labels


@dataclass(frozen=True)
class HeadSolution:
    """What the Linear head's gradient reveals about each sample of the batch (float64)."""

    features: torch.Tensor  # (B, F): the head's input for each sample
    labels: torch.Tensor  # (B,), in the same order as ``features``
    errors: torch.Tensor  # (B, K): softmax − onehot per sample, i.e. B × ∂loss/∂logits
    residual: float  # relative residual of the head's gradient equations; ~1e-7 when exact


def unmix_linear_head(
    g_weight: torch.Tensor,
    g_bias: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    labels: torch.Tensor,
    *,
    iterations: int = 100,
) -> HeadSolution:
    """Features of a batch with the given labels, from the head's (batch-mean) gradient.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> head = torch.nn.Linear(20, 10).double()
        >>> h, y = torch.rand(3, 20, dtype=torch.float64), torch.tensor([1, 4, 7])
        >>> loss = torch.nn.functional.cross_entropy(head(h), y)
        >>> gw, gb = torch.autograd.grad(loss, [head.weight, head.bias])
        >>> found = unmix_linear_head(gw, gb, head.weight.detach(), head.bias.detach(), y)
        >>> bool((found.features - h).abs().max() < 1e-6), found.residual < 1e-9
        (True, True)
    """
    batch = int(labels.numel())
    dtype = torch.float64
    weight, bias = weight.to(dtype), bias.to(dtype)
    summed_w, summed_b = g_weight.to(dtype) * batch, g_bias.to(dtype) * batch
    _, _, vh = torch.linalg.svd(summed_w, full_matrices=False)
    # The head's gradient has at most K rows: for a batch larger than the class count the features
    # span more than it reveals, so only their component in its (rank ≤ K) row space is solved for
    # here (an approximation the caller sees in ``residual``; the layers below refine it).
    rank = min(batch, vh.shape[0])
    basis = vh[:rank].T  # (F, rank): the features' span (exact when rank == B)
    onehot = F.one_hot(labels.to(weight.device), weight.shape[0]).to(dtype)
    target = torch.cat([(summed_w @ basis).flatten(), summed_b])
    scale = float(target @ target)

    dense = batch * rank <= DENSE_UNKNOWNS
    # (rank, K): the logits in one small product. Multiplying through the F features instead made
    # every Jacobian column cost B·F·K: 70% of a batch-16 CIFAR-100 run (cProfile, issue 21).
    head = basis.T @ weight.T

    def errors_of(coeffs: torch.Tensor) -> torch.Tensor:
        return torch.softmax(coeffs @ head + bias, dim=-1) - onehot

    def residual_of(flat: torch.Tensor) -> torch.Tensor:
        coeffs = flat.view(batch, rank)
        errors = errors_of(coeffs)
        return torch.cat([(errors.T @ coeffs).flatten(), errors.sum(0)]) - target

    # Two starts; the better fit wins. (1) A sample's own class row is ≈ −h_b (its softmax entry
    # is small before training). (2) All samples at the mean feature, h̄ = B∂Wᵀ·B∂c / ‖B∂c‖²
    # (exact when the features are equal): right when the model already predicts a sample's
    # class confidently, whose own row is then dominated by the others. Equal starting rows
    # (repeated labels, start 2) are a symmetric point the solver cannot leave; a fixed,
    # deterministic tilt breaks the tie.
    gen = torch.Generator().manual_seed(0)
    tilt = torch.randn((batch, rank), generator=gen, dtype=dtype).to(summed_w.device)
    mean_feature = summed_w.T @ summed_b / (summed_b @ summed_b).clamp_min(1e-300)
    starts = [-summed_w[labels] @ basis, (mean_feature @ basis).expand(batch, rank)]
    best_flat, best_cost = None, float("inf")
    for coeffs in starts:
        coeffs = coeffs + 1e-2 * coeffs.norm() / batch * tilt
        if dense:
            flat, cost = _levenberg_marquardt(residual_of, coeffs.flatten(), iterations, stop=1e-26 * scale)
        elif batch <= rank:  # exactly solvable: solve each step accurately
            flat, cost = _levenberg_marquardt_matrix_free(residual_of, coeffs.flatten(), iterations,
                                                          stop=1e-26 * scale, cg_iterations=100, stall=1e-9)
        else:  # more samples than classes: an approximation the layers below refine; keep it cheap
            flat, cost = _levenberg_marquardt_matrix_free(residual_of, coeffs.flatten(), iterations, stop=1e-26 * scale)
        if cost < best_cost:
            best_flat, best_cost = flat, cost
        if best_cost <= 1e-10 * scale:  # relative residual 1e-5: good enough, skip the other start
            break
    assert best_flat is not None
    flat, cost = best_flat, best_cost
    coeffs = flat.view(batch, rank)
    return HeadSolution(
        features=coeffs @ basis.T,
        labels=labels.clone(),
        errors=errors_of(coeffs),
        residual=(cost / max(scale, 1e-300)) ** 0.5,
    )


def _levenberg_marquardt(residual_of, flat: torch.Tensor, iterations: int, *, stop: float) -> tuple[torch.Tensor, float]:  # type: ignore[no-untyped-def]
    """Minimise ‖residual_of(flat)‖² from ``flat``; returns the point and its cost."""
    residual = residual_of(flat)
    cost = float(residual @ residual)
    damping = 1e-3
    for _ in range(iterations):
        if cost <= stop:
            break
        jac = jacfwd(residual_of)(flat)
        normal, rhs = jac.T @ jac, -(jac.T @ residual)
        improved = False
        while damping < 1e12:
            step = torch.linalg.solve(normal + damping * torch.diag(normal.diagonal().clamp_min(1e-12)), rhs)
            trial = residual_of(flat + step)
            trial_cost = float(trial @ trial)
            if trial_cost < cost:
                flat, residual, cost = flat + step, trial, trial_cost
                damping = max(damping / 3, 1e-12)
                improved = True
                break
            damping *= 4
        if not improved:
            break
    return flat, cost


def _levenberg_marquardt_matrix_free(residual_of, flat: torch.Tensor, iterations: int, *,  # type: ignore[no-untyped-def]
                                     stop: float, cg_iterations: int = 25,
                                     stall: float = 1e-3) -> tuple[torch.Tensor, float]:
    """:func:`_levenberg_marquardt` without forming the Jacobian: each damped Gauss-Newton step
    ``(JᵀJ + λI) s = −Jᵀr`` is solved by conjugate gradients on Jacobian-vector products.

    Why: for a batch of 256 CIFAR-100 images the Jacobian is 10,100 × 25,600 and ``jacfwd``'s
    intermediates asked for 40 GB; here memory is a few copies of the residual and the unknowns.
    """
    from torch.func import jvp, vjp

    residual = residual_of(flat)
    cost = float(residual @ residual)
    probe = torch.randn(flat.shape, generator=torch.Generator().manual_seed(0), dtype=flat.dtype).to(flat.device)
    damping = 1e-3
    for _ in range(iterations):
        if cost <= stop:
            break
        _, pull = vjp(residual_of, flat)

        def normal(v: torch.Tensor) -> torch.Tensor:
            return pull(jvp(residual_of, (flat,), (v,))[1])[0]

        gradient = pull(residual)[0]
        # A scale for λ: the mean diagonal of JᵀJ (Hutchinson's estimate with one probe).
        mean_diagonal = float(probe @ normal(probe)) / flat.numel()
        improved = False
        while damping < 1e12:
            step = _conjugate_gradients(lambda v: normal(v) + damping * mean_diagonal * v, -gradient, cg_iterations)
            trial = residual_of(flat + step)
            trial_cost = float(trial @ trial)
            if trial_cost < cost:
                improved = cost - trial_cost > stall * cost  # else the fit has stalled: stop after this step
                flat, residual, cost = flat + step, trial, trial_cost
                damping = max(damping / 3, 1e-12)
                break
            damping *= 4
        if not improved:
            break
    return flat, cost


def _conjugate_gradients(apply, rhs: torch.Tensor, iterations: int, tolerance: float = 1e-10) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """x with apply(x) ≈ rhs for a symmetric positive definite ``apply``, from x = 0."""
    x = torch.zeros_like(rhs)
    residual = rhs.clone()
    direction = residual.clone()
    gamma = residual @ residual
    floor = tolerance**2 * gamma
    for _ in range(iterations):
        if gamma <= floor:
            break
        q = apply(direction)
        alpha = gamma / (direction @ q).clamp_min(1e-300)
        x = x + alpha * direction
        residual = residual - alpha * q
        gamma, previous = residual @ residual, gamma
        direction = residual + (gamma / previous) * direction
    return x


def label_candidates(
    signal: torch.Tensor, batch: int, *, hidden: list[int] | None = None, limit: int = 24
) -> list[list[int]]:
    """Plausible label multisets of a batch, most likely first, from the head's bias-gradient signal.

    ``signal`` is ``Σ_b (p_bc − 1[y_b = c])`` per class: negative classes are surely present. When
    fewer than ``batch`` are negative, the rest are repeats of present classes or present classes
    the model predicts with a high probability: ``hidden`` (see
    :func:`~gradleak.attacks.labels.hidden_present_classes`), else the largest positive signals.

    Example:
        >>> import torch
        >>> signal = torch.tensor([0.3, -0.9, 0.02, -0.8, 0.4])
        >>> label_candidates(signal, 3)[:3]
        [[1, 1, 3], [1, 3, 3], [1, 3, 4]]
        >>> label_candidates(signal, 3, hidden=[4])[0]
        [1, 3, 4]
    """
    order = [int(c) for c in torch.argsort(signal)]
    present = [c for c in order if float(signal[c]) < 0][:batch]
    if not present:
        present = order[:1]
    missing = batch - len(present)
    if missing == 0:
        return [sorted(present)]
    # Pool for the missing ones: classes evidently present despite their signal first, then
    # repeats of the present classes, then the largest positive signals (a present class with a
    # positive entry has Σ_b p_bc ≥ 1: the model predicts it confidently), then the smallest.
    hidden = [c for c in (hidden or []) if c not in present]
    rest = [c for c in order if c not in present and c not in hidden]
    largest = rest[::-1][: missing + 2]
    pool = hidden + present + largest + [c for c in rest[:2] if c not in largest]
    candidates: list[list[int]] = []
    for extra in itertools.combinations_with_replacement(pool, missing):
        candidates.append(sorted(present + list(extra)))
        if len(candidates) >= limit:
            break
    return candidates


def solve_linear_head(
    g_weight: torch.Tensor,
    g_bias: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    signal: torch.Tensor,
    batch: int,
    *,
    hidden: list[int] | None = None,
    accept: float = 1e-5,
    screening: int = 12,
    iterations: int = 100,
) -> HeadSolution:
    """Labels and features of a batch: the candidate label multiset whose solution fits best.

    A batch larger than the class count has more samples than the head's gradient has rows: no
    multiset explains it exactly, so the residual cannot rank them (measured on MNIST, 11 images:
    wrong multisets fit as well as the right one, 24 solves took 40 s). The bias-corrected count
    estimate (:func:`~gradleak.attacks.labels.allocate_labels`) is then the one solved for.
    """
    if batch > signal.numel():
        labels = torch.tensor(allocate_labels(signal, batch, hidden))
        return unmix_linear_head(g_weight, g_bias, weight, bias, labels)
    # The bias-corrected count estimate first (right for most batches with repeated labels), then
    # the multisets of label_candidates. Each gets a short screening solve: the right multiset
    # reaches ~1e-7 within ~8 Levenberg-Marquardt steps, wrong ones stall above 1e-2 (CIFAR-100,
    # batch of 16), so only the best candidate is solved with the full budget. Screening every
    # candidate fully took 17 x 27 s at batch 16 (issue 21).
    candidates = [allocate_labels(signal, batch, hidden)]
    candidates += [c for c in label_candidates(signal, batch, hidden=hidden) if c != candidates[0]]
    best: HeadSolution | None = None
    for labels in candidates:
        found = unmix_linear_head(g_weight, g_bias, weight, bias, torch.tensor(labels), iterations=screening)
        if best is None or found.residual < best.residual:
            best = found
        if best.residual < accept:
            return best
    assert best is not None
    return unmix_linear_head(g_weight, g_bias, weight, bias, best.labels, iterations=iterations)
