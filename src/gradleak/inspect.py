"""Client-side inspection of a received model: does it carry an imprint-style trap?

A malicious server can read whole batches out of a gradient when the model it sends has a layer
whose units share one weight row and differ only in their biases (the imprint block of Fowl et
al. 2022, :mod:`gradleak.models.imprint`). Such layers are easy to see in the weights: honestly
initialised or trained layers have full-rank weights with distinct rows. :func:`inspect_state`
reports, one finding per suspicious tensor:

* ``identical-rows``: a 2-D weight whose rows are (near-)identical, so its units differ only in
  bias (the binning layer);
* ``identical-columns``: a 2-D weight whose columns are identical, so the layer only passes on
  the sum of its inputs (the imprint block's read-out);
* ``near-identical-rows``: every row within cosine 0.999 of the mean row (a binning layer whose
  rows were perturbed, or scaled, to dodge the exact checks);
* ``rank-one``: a 2-D weight of rank one (rows differ only in scale: a scaled binning layer);
* ``huge-first-linear``: the first layer is a fully connected layer of at least
  ``HUGE_FIRST_LINEAR`` inputs and units acting on the raw input.

Checkpoints are read without unpickling code: safetensors, or ``torch.load(weights_only=True)``,
one chunk of rows at a time (:mod:`gradleak.io.checkpoint_tensors`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from gradleak.io.checkpoint_tensors import CheckpointTensors

ROW_TOLERANCE = 1e-5  # max |row - row_0| relative to max |W| for rows to count as identical
NEAR_IDENTICAL_COSINE = 0.999  # every row this close in direction to the mean row: near-identical
RANK_ONE_RATIO = 1e-4  # second / first singular value below this: rank one
MIN_UNITS = 4  # a layer needs at least this many rows (columns) for the row (column) checks
HUGE_FIRST_LINEAR = 512  # in- and out-features of a first Linear layer that count as huge
CHUNK_ELEMENTS = 2**20  # values read and converted to float64 at a time (8 MB)


@dataclass(frozen=True)
class Finding:
    """One suspicious tensor: its name, the kind of trap it suggests, and a one-line explanation."""

    tensor: str
    kind: str
    message: str

    def __str__(self) -> str:
        return f"{self.tensor}: {self.kind}: {self.message}"


def load_state(path: str | Path) -> CheckpointTensors:
    """The tensors of a checkpoint file (safetensors or a weights-only torch file), read on demand."""
    return CheckpointTensors.open(path)


def inspect_state(state: Mapping[str, torch.Tensor] | CheckpointTensors) -> list[Finding]:
    """Findings for the tensors of a model (in state-dict order, i.e. layer order).

    Each weight is read in chunks of rows (:data:`CHUNK_ELEMENTS` float64 values at a time), so a
    checkpoint file is checked in memory bounded by a chunk, not by its size.
    """
    source = state if isinstance(state, CheckpointTensors) else CheckpointTensors.of(state)
    findings: list[Finding] = []
    weights = [n for n in source.names() if len(source.shape(n)) >= 2 and source.is_float(n)]
    for name in weights:
        shape = source.shape(name)
        views = [(shape[0], _product(shape[1:]))]  # units x inputs (a full-image convolution: a Linear layer)
        if len(shape) > 2:  # a read-out matrix saved with its rows split over leading dimensions
            views.append((_product(shape[:-1]), shape[-1]))
        for rows, cols in views:
            finding = _check_matrix(name, _MatrixReader(source, name, cols), rows, cols, source)
            if finding is not None:
                findings.append(finding)
                break
    if weights:
        first, shape = weights[0], source.shape(weights[0])
        units, inputs = shape[0], _product(shape[1:])
        if units >= HUGE_FIRST_LINEAR and inputs >= HUGE_FIRST_LINEAR:
            findings.append(Finding(
                first, "huge-first-linear",
                f"the first layer is fully connected on the raw input with {units} units on {inputs} inputs: "
                "a wide linear layer in front of the model can record individual inputs in its gradient",
            ))
    return findings


def _product(dims: tuple[int, ...]) -> int:
    out = 1
    for d in dims:
        out *= d
    return out


class _MatrixReader:
    """A weight read as a (rows, cols) float64 matrix, in chunks of whole rows of its first dimension."""

    def __init__(self, source: CheckpointTensors, name: str, cols: int) -> None:
        self.source, self.name, self.cols = source, name, cols
        shape = source.shape(name)
        self.leading, per_leading = shape[0], max(1, _product(shape[1:]))
        self.step = max(1, CHUNK_ELEMENTS // per_leading)

    def __iter__(self):  # type: ignore[no-untyped-def]
        for start in range(0, self.leading, self.step):
            chunk = self.source.rows(self.name, start, min(start + self.step, self.leading))
            yield chunk.detach().to(device="cpu", dtype=torch.float64).reshape(-1, self.cols)


def _check_matrix(name: str, matrix: _MatrixReader, rows: int, cols: int, source: CheckpointTensors) -> Finding | None:
    """The checks of the module docstring, each in one or two passes over the matrix's chunks.

    Non-finite entries (a NaN planted to dodge the checks) are left out of the comparisons and
    count as their column's finite mean elsewhere."""
    # Pass 1: the largest magnitude; each column's first finite value (the reference row) and each
    # row's (the reference column), with the largest deviation from them; column means; the
    # largest row (a start for the rank-one check).
    top, row_spread, col_spread = 0.0, 0.0, 0.0
    reference = torch.zeros(cols, dtype=torch.float64)
    resolved = torch.zeros(cols, dtype=torch.bool)
    sums, counts = torch.zeros(cols, dtype=torch.float64), torch.zeros(cols, dtype=torch.float64)
    largest, largest_norm = torch.zeros(cols, dtype=torch.float64), -1.0
    for chunk in matrix:
        if not chunk.numel():
            continue
        finite = torch.isfinite(chunk)
        clean = torch.where(finite, chunk, torch.zeros((), dtype=chunk.dtype))
        if bool(finite.any()):
            top = max(top, float(clean.abs().max()))
        first = finite.to(torch.uint8).argmax(dim=0)  # first finite row of each column in this chunk
        new = ~resolved & finite.any(dim=0)
        reference[new] = chunk[first[new], torch.nonzero(new).flatten()]
        resolved |= new
        row_spread = max(row_spread, float(((clean - reference) * finite).abs().max()))
        own = chunk.gather(1, finite.to(torch.uint8).argmax(dim=1, keepdim=True))  # each row's first finite value
        col_spread = max(col_spread, float(((clean - own.nan_to_num(0.0)) * finite).abs().max()))
        sums += clean.sum(dim=0)
        counts += finite.sum(dim=0)
        norms = clean.norm(dim=1)
        if float(norms.max()) > largest_norm:
            largest_norm, largest = float(norms.max()), clean[int(norms.argmax())].clone()
    if not top > 0:
        return None  # an all-zero layer (zero init) carries no imprint
    shape = f"{rows}x{cols} weight"
    if rows >= MIN_UNITS and row_spread <= ROW_TOLERANCE * top:
        return Finding(name, "identical-rows",
                       f"all {rows} rows of the {shape} are identical, so its units differ only in their bias "
                       f"(an imprint/binning layer that separates inputs by one statistic{_bias_detail(name, rows, source)})")
    if cols >= MIN_UNITS and col_spread <= ROW_TOLERANCE * top:
        return Finding(name, "identical-columns",
                       f"all {cols} columns of the {shape} are identical: the layer passes on only the sum of "
                       "its inputs (the read-out of an imprint block)")
    if min(rows, cols) < MIN_UNITS:
        return None
    mean = sums / counts.clamp_min(1)

    def filled():  # type: ignore[no-untyped-def]
        for chunk in matrix:
            yield torch.where(torch.isfinite(chunk), chunk, mean.expand_as(chunk))

    # Pass 2: each row's cosine to the mean row; one power step from the largest row toward the
    # top right singular vector.
    lowest_cosine, power = float("inf"), torch.zeros(cols, dtype=torch.float64)
    for chunk in filled():
        cosine = (chunk @ mean) / (chunk.norm(dim=1) * mean.norm()).clamp_min(1e-300)
        lowest_cosine = min(lowest_cosine, float(cosine.min()))
        power += chunk.T @ (chunk @ largest)
    if lowest_cosine >= NEAR_IDENTICAL_COSINE:
        return Finding(name, "near-identical-rows",
                       f"every one of the {rows} rows of the {shape} points the same way (cosine to their mean "
                       f">= {lowest_cosine:.4f}): its units differ almost only in bias and scale, a "
                       "perturbed imprint/binning layer")
    # Pass 3: the energy left outside that direction bounds every singular value but the first:
    # s2² <= residual, so residual <= RANK_ONE_RATIO² x captured means s2 / s1 <= RANK_ONE_RATIO.
    direction = power / power.norm().clamp_min(1e-300)
    captured, residual = 0.0, 0.0
    for chunk in filled():
        along = chunk @ direction
        captured += float(along @ along)
        residual += float(((chunk - along[:, None] * direction) ** 2).sum())
    if captured > 0 and residual <= RANK_ONE_RATIO**2 * captured:
        return Finding(name, "rank-one",
                       f"the {shape} has rank one (energy outside its top direction {residual / captured:.1e} of "
                       "the energy along it): its rows differ only in scale, like a scaled imprint layer")
    return None


def _bias_detail(name: str, rows: int, source: CheckpointTensors) -> str:
    bias = name[: -len("weight")] + "bias" if name.endswith("weight") else None
    if bias is None or bias not in source.names() or source.shape(bias) != (rows,):
        return ""
    values = source.tensor(bias).detach().double()
    distinct = int(torch.unique(values).numel())
    return f"; {distinct} distinct biases from {float(values.min()):.4g} to {float(values.max()):.4g}"


def inspect_model(model: torch.nn.Module) -> list[Finding]:
    """Findings for a model in memory (its state dict)."""
    return inspect_state(CheckpointTensors.of(model.state_dict()))


__all__ = ["Finding", "inspect_model", "inspect_state", "load_state"]
