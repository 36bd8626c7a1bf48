"""Subspace tests on a weight gradient: the linear algebra of the span attack (DAGER-class).

A batch's weight gradient ``G = Σₜ δₜ xₜᵀ`` (columns in the inputs' space, after
:mod:`gradleak.text.layer_inputs` has oriented it) has the layer inputs ``xₜ`` in its column
space. :func:`input_span` takes an orthonormal basis of that space from an SVD, keeping the
singular values above a floor; :func:`span_distance` is the relative distance of candidate
inputs to it: ~1e-8 for inputs the client's batch really had (float32 rounding), order 0.1–1
for the others while the batch holds clearly fewer tokens than the layer is wide.

Noise (a defense) fills the whole space: the floor is then the largest singular value a
Gaussian matrix of the declared variance reaches (``σ (√rows + √cols)``, the Marchenko–Pastur
edge), and the distance threshold grows with it (:func:`noise_threshold`).

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(5, 64, generator=g, dtype=torch.float64)      # 5 inputs, width 64
    >>> d = torch.randn(5, 32, generator=g, dtype=torch.float64)      # their output gradients
    >>> basis = input_span(x.T @ d, floor=1e-9).basis                  # G = Σ xₜ δₜᵀ
    >>> basis.shape[1]
    5
    >>> bool(span_distance(basis, x).max() < 1e-10), bool(span_distance(basis, torch.randn(3, 64, generator=g, dtype=torch.float64)).min() > 0.5)
    (True, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

EXACT_FLOOR = 1e-6  # singular values below this share of the largest are float32 rounding
EXACT_THRESHOLD = 1e-4  # relative distance accepted as "in the span" for an exact gradient


@dataclass
class InputSpan:
    """An orthonormal basis of a layer's input span and how it was cut."""

    basis: torch.Tensor  # (d, r) float64
    rank: int
    width: int  # d, the inputs' dimension
    columns: int  # k, the outputs (the other side of the gradient matrix)
    singular_values: torch.Tensor  # all of them, largest first
    cut: float  # absolute singular value below which directions were dropped


def input_span(gradient: torch.Tensor, *, floor: float = EXACT_FLOOR, noise_std: float = 0.0) -> InputSpan:
    """Basis of the column space of ``gradient`` (``(d, k)``, float64), above the floor.

    ``floor`` is relative to the largest singular value; ``noise_std`` (per entry, from the
    noise model) raises the cut to the Marchenko–Pastur edge of that noise, times 1.1.
    """
    g = gradient.double()
    # An SVD, not the eigenvectors of g gᵀ: squaring would lose the weak directions' accuracy.
    u, s, _ = torch.linalg.svd(g, full_matrices=False)
    cut = float(s[0]) * floor if s.numel() else 0.0
    if noise_std > 0:
        rows, cols = g.shape
        cut = max(cut, 1.1 * noise_std * (math.sqrt(rows) + math.sqrt(cols)))
    rank = int((s > cut).sum())
    return InputSpan(u[:, :rank], rank, g.shape[0], g.shape[1], s, cut)


def span_distance(basis: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """``‖x − P x‖ / ‖x‖`` for each row ``x`` of ``inputs`` (any leading shape), ``P`` the
    projection on the columns of ``basis``, computed in ``basis``' dtype."""
    x = inputs.to(basis.dtype)
    coords = x @ basis
    residual = x - coords @ basis.T
    return residual.norm(dim=-1) / x.norm(dim=-1).clamp_min(torch.finfo(basis.dtype).tiny)


def noise_threshold(span: InputSpan, noise_std: float) -> float:
    """Distance threshold under additive noise of per-entry std ``noise_std``.

    A true input's distance to a subspace estimated from a noisy matrix is about the sine of the
    angle by which noise tilts it: ``‖N‖ / s`` for the weakest kept direction ``s`` (Wedin's
    bound), ``‖N‖ ≈ σ (√rows + √cols)``. Never below the exact-gradient threshold, capped at 0.5.
    """
    if noise_std <= 0 or span.rank == 0:
        return EXACT_THRESHOLD
    edge = noise_std * (math.sqrt(span.width) + math.sqrt(span.columns))
    weakest = float(span.singular_values[span.rank - 1])
    return min(0.5, max(EXACT_THRESHOLD, 2.0 * edge / max(weakest, 1e-300)))
