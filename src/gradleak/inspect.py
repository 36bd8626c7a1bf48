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

Checkpoints are read without unpickling code: safetensors, or ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gradleak.errors import GradleakError

ROW_TOLERANCE = 1e-5  # max |row - row_0| relative to max |W| for rows to count as identical
NEAR_IDENTICAL_COSINE = 0.999  # every row this close in direction to the mean row: near-identical
RANK_ONE_RATIO = 1e-4  # second / first singular value below this: rank one
MIN_UNITS = 4  # a layer needs at least this many rows (columns) for the row (column) checks
HUGE_FIRST_LINEAR = 512  # in- and out-features of a first Linear layer that count as huge


@dataclass(frozen=True)
class Finding:
    """One suspicious tensor: its name, the kind of trap it suggests, and a one-line explanation."""

    tensor: str
    kind: str
    message: str

    def __str__(self) -> str:
        return f"{self.tensor}: {self.kind}: {self.message}"


def load_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file (safetensors or a weights-only torch file), by name."""
    path = Path(path)
    if not path.exists():
        raise GradleakError(f"model file {path} does not exist: give a checkpoint (.pt, .pth, .safetensors)")
    if not path.is_file():
        raise GradleakError(f"{path} is not a file: give a checkpoint (.pt, .pth, .safetensors)")
    with path.open("rb") as f:
        head = f.read(9)
    if path.suffix == ".safetensors" or (len(head) == 9 and head[8:9] == b"{"):
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise GradleakError(f"{path} is a safetensors file: pip install safetensors to read it") from None
        try:
            return dict(load_file(str(path)))
        except Exception as error:  # noqa: BLE001 - any parse failure is a bad file
            raise GradleakError(f"{path} is not a valid safetensors file ({type(error).__name__}: {error})") from None
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - pickle errors, zip errors, disallowed globals
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise GradleakError(
            f"{path} is neither a safetensors file nor a torch checkpoint loadable with weights_only=True "
            f"({first[:160]}): save the model's state_dict with torch.save or safetensors"
        ) from None
    state = _tensors(loaded)
    if not state:
        raise GradleakError(f"{path} holds no tensors: give a saved state_dict")
    return state


def _tensors(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Flatten a (nested) state dict: {"state_dict": {...}} and {"model": {...}} are common."""
    if isinstance(obj, torch.Tensor):
        return {prefix or "tensor": obj}
    out: dict[str, torch.Tensor] = {}
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, (torch.Tensor, Mapping)):
                out.update(_tensors(value, name))
    return out


def inspect_state(state: Mapping[str, torch.Tensor]) -> list[Finding]:
    """Findings for the tensors of a model (in state-dict order, i.e. layer order)."""
    findings: list[Finding] = []
    weights = [(n, t) for n, t in state.items() if t.dim() >= 2 and t.is_floating_point()]
    for name, tensor in weights:
        for view in _matrix_views(tensor.detach().cpu()):
            finding = _check_matrix(name, view.double(), state)
            if finding is not None:
                findings.append(finding)
                break
    first = next(((n, t) for n, t in state.items() if t.dim() >= 2 and t.is_floating_point()), None)
    if first is not None:
        units, inputs = first[1].shape[0], first[1][0].numel()  # a full-image convolution is a Linear layer
        if units >= HUGE_FIRST_LINEAR and inputs >= HUGE_FIRST_LINEAR:
            findings.append(Finding(
                first[0], "huge-first-linear",
                f"the first layer is fully connected on the raw input with {units} units on {inputs} inputs: "
                "a wide linear layer in front of the model can record individual inputs in its gradient",
            ))
    return findings


def _matrix_views(tensor: torch.Tensor) -> list[torch.Tensor]:
    """The 2-D readings of a weight: units x inputs (a Linear layer, or a convolution whose kernel
    covers the whole image), and for 3-D and higher also rows x last dimension (a read-out matrix
    saved with its rows split over leading dimensions)."""
    views = [tensor.reshape(tensor.shape[0], -1)]
    if tensor.dim() > 2:
        views.append(tensor.reshape(-1, tensor.shape[-1]))
    return views


def _fill_non_finite(w: torch.Tensor, *, dim: int) -> torch.Tensor:
    """``w`` with NaN/inf entries replaced by the median of their column (``dim=0``) or row
    (``dim=1``): a few poisoned entries must not hide a structure every other entry shows."""
    finite = torch.isfinite(w)
    if bool(finite.all()):
        return w
    median = w.masked_fill(~finite, float("nan")).nanmedian(dim=dim, keepdim=True).values.nan_to_num(0.0)
    return torch.where(finite, w, median.expand_as(w))


def _check_matrix(name: str, raw: torch.Tensor, state: Mapping[str, torch.Tensor]) -> Finding | None:
    w = _fill_non_finite(raw, dim=0)  # rows compared entry by entry: fill from the column
    rows, cols = w.shape
    top = float(w.abs().max())
    if not top > 0:
        return None  # an all-zero layer (zero init) carries no imprint
    shape = f"{rows}x{cols} weight"
    if rows >= MIN_UNITS and float((w - w[0]).abs().max()) <= ROW_TOLERANCE * top:
        bias = state.get(name[: -len("weight")] + "bias") if name.endswith("weight") else None
        detail = ""
        if bias is not None and bias.dim() == 1 and bias.numel() == rows:
            distinct = int(torch.unique(bias.detach()).numel())
            detail = f"; {distinct} distinct biases from {float(bias.min()):.4g} to {float(bias.max()):.4g}"
        return Finding(name, "identical-rows",
                       f"all {rows} rows of the {shape} are identical, so its units differ only in their bias "
                       f"(an imprint/binning layer that separates inputs by one statistic{detail})")
    by_row = _fill_non_finite(raw, dim=1)  # columns compared entry by entry: fill from the row
    if cols >= MIN_UNITS and float((by_row - by_row[:, :1]).abs().max()) <= ROW_TOLERANCE * top:
        return Finding(name, "identical-columns",
                       f"all {cols} columns of the {shape} are identical: the layer passes on only the sum of "
                       "its inputs (the read-out of an imprint block)")
    if rows >= MIN_UNITS and cols >= MIN_UNITS:
        mean = w.mean(dim=0)
        cosine = (w @ mean) / (w.norm(dim=1) * mean.norm()).clamp_min(1e-300)
        if float(cosine.min()) >= NEAR_IDENTICAL_COSINE:
            return Finding(name, "near-identical-rows",
                           f"every one of the {rows} rows of the {shape} points the same way (cosine to their mean "
                           f">= {float(cosine.min()):.4f}): its units differ almost only in bias and scale, a "
                           "perturbed imprint/binning layer")
    if min(rows, cols) >= MIN_UNITS:
        s = torch.linalg.svdvals(w)
        if float(s[1]) <= RANK_ONE_RATIO * float(s[0]):
            return Finding(name, "rank-one",
                           f"the {shape} has rank one (singular values {float(s[0]):.3g}, {float(s[1]):.1e}): its rows "
                           "differ only in scale, like a scaled imprint layer")
    return None


def inspect_model(model: torch.nn.Module) -> list[Finding]:
    """Findings for a model in memory (its state dict)."""
    return inspect_state(dict(model.state_dict()))


__all__ = ["Finding", "inspect_model", "inspect_state", "load_state"]
