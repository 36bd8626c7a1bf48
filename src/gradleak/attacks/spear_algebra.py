"""The linear algebra both spear searches share: top singular triplets and cone vertices."""

from __future__ import annotations

import numpy as np
import torch


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


def cone_vertex(basis: np.ndarray, objective: np.ndarray, tolerance: float) -> np.ndarray | None:
    """The vertex of ``{p : basis·p ≥ 0, Σ basis·p = 1}`` that maximises ``objective·p`` (HiGHS), or None."""
    from scipy.optimize import linprog

    rows, dim = basis.shape
    result = linprog(-objective, A_ub=-basis, b_ub=np.full(rows, tolerance / rows), A_eq=basis.sum(axis=0)[None],
                     b_eq=[1.0], bounds=[(None, None)] * dim, method="highs")
    return result.x if result.status == 0 else None
