"""What can an update leak? Per-layer rank and equation counts, before any attack runs.

For each layer with a weight (Linear, Conv2d) and a batch of B, as in R-GAP's rank analysis:

* **gradient rank**: a Linear layer's weight gradient ``Σ_b δ_b x_bᵀ`` has rank at most
  ``min(B, outputs, inputs)``; B samples can be told apart there only if that bound is B.
* **equations vs unknowns**: the weight gradient's entries plus, when the layer's output is known
  from above, one forward equation per output value, against ``B × inputs`` unknowns.
* **disaggregation** (SPEAR): a Linear layer whose input is a ReLU output separates the batch
  exactly when B ≤ its outputs (rank) and each sample has B − 1 independent zeros among its
  inputs: with about half of a ReLU layer inactive, B ≤ inputs / 2 + 1.

These are necessary conditions counted from the architecture, not guarantees: how far gradleak's
searches get on real images is measured in ``benchmarks/RESULTS.md``.

Example:
    >>> from gradleak.models.mlp import MLP
    >>> report = identifiability(MLP(width=100), (3, 32, 32), batch=8)
    >>> report.largest_exact_batch, report.exact
    (50, True)
    >>> [row.name for row in report.layers]
    ['layers.0', 'layers.2', 'layers.4']
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn


ANY_BATCH = 10**9  # a layer whose forward equations alone determine its input, for any batch


@dataclass(frozen=True)
class LayerIdentifiability:
    """One weighted layer: what its gradient can determine about its input for the batch."""

    name: str
    kind: str  # "linear" or "conv"
    inputs: int  # values per sample entering the layer
    outputs: int  # values per sample leaving it
    gradient_rank: int  # upper bound on the rank of the (reshaped) weight gradient
    equations: int  # weight-gradient entries + forward equations (when the output is known)
    unknowns: int  # B × inputs
    determined: bool  # equations ≥ unknowns and rank ≥ B
    relu_input: bool  # the input is a ReLU output (sparse, non-negative): disaggregable
    largest_batch: int  # the largest batch this layer determines (0: none)
    note: str


@dataclass(frozen=True)
class Identifiability:
    """The whole model for one batch size: per-layer rows and the verdict."""

    batch: int
    layers: list[LayerIdentifiability]
    largest_exact_batch: int  # the largest batch whose images the update can determine (necessary condition)
    exact: bool  # batch ≤ largest_exact_batch
    route: str  # how the images would follow

    def as_record(self) -> dict[str, Any]:
        """For ``metrics.json``."""
        return {
            "batch": self.batch,
            "largest_exact_batch": self.largest_exact_batch,
            "exact_possible": self.exact,
            "route": self.route,
            "layers": [asdict(row) for row in self.layers],
        }

    def table(self) -> str:
        """A Markdown table and a one-line verdict."""
        lines = [
            f"| layer | kind | inputs/sample | outputs | gradient rank ≤ | equations | unknowns (B={self.batch}) | determined | largest batch | note |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in self.layers:
            lines.append(
                f"| {row.name} | {row.kind} | {row.inputs:,} | {row.outputs:,} | {row.gradient_rank:,} | {row.equations:,} | "
                f"{row.unknowns:,} | {'yes' if row.determined else 'no'} | {_batch_text(row.largest_batch)} | {row.note} |"
            )
        verdict = "can" if self.exact else "cannot"
        lines.append(
            f"a batch of {self.batch} {verdict} be recovered exactly from this update: images are determined up to a batch of "
            f"{_batch_text(self.largest_exact_batch)} ({self.route})"
        )
        return "\n".join(lines)


def _batch_text(batch: int) -> str:
    return "any" if batch >= ANY_BATCH else f"{batch:,}"


def identifiability(
    model: nn.Module, input_shape: tuple[int, int, int], batch: int, *, sent: tuple[str, ...] | None = None
) -> Identifiability:
    """Rank and equation counts per weighted layer of ``model`` for a batch of ``batch`` (no data needed).

    ``sent``: names of the parameters whose gradients the update carries (None: all)."""
    shapes = _layer_shapes(model, input_shape)
    leaves = [(n, m) for n, m in model.named_modules() if len(list(m.children())) == 0]
    weighted = [(i, n, m) for i, (n, m) in enumerate(leaves) if isinstance(m, (nn.Linear, nn.Conv2d))]
    rows: list[LayerIdentifiability] = []
    for position, (index, name, layer) in enumerate(weighted):
        inputs, outputs = shapes[name]
        is_sent = sent is None or f"{name}.weight" in sent
        relu_input = index > 0 and isinstance(leaves[index - 1][1], nn.ReLU)
        has_bias = getattr(layer, "bias", None) is not None
        weight_entries = layer.weight.numel() + (layer.bias.numel() if has_bias else 0)
        if isinstance(layer, nn.Linear):
            rank = min(batch, layer.out_features, layer.in_features)
            width_bound = min(layer.out_features, layer.in_features)
        else:
            per_position = layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1]
            rank = min(layer.out_channels, per_position, batch * outputs // layer.out_channels)
            width_bound = min(layer.out_channels, per_position)
        output_known = position == len(weighted) - 1 or outputs >= inputs
        forward = batch * outputs if output_known else 0
        equations = (weight_entries if is_sent else 0) + forward
        unknowns = batch * inputs
        if not is_sent:
            largest, note = 0, "gradient not sent"
        elif relu_input and isinstance(layer, nn.Linear) and position == len(weighted) - 1:
            # A head's output gradients (softmax − onehot) sum to zero: rank ≤ classes − 1, and
            # samples sharing a label are told apart only by their small softmax differences.
            largest = min(layer.out_features - 1, layer.in_features // 2 + 1)
            note = "ReLU input at the head: disaggregates up to classes − 1 samples (ill-conditioned for repeated labels)"
        elif relu_input and isinstance(layer, nn.Linear):
            largest = min(layer.out_features, layer.in_features // 2 + 1)
            note = "ReLU input: the batch disaggregates (rank B, B − 1 zeros per sample)"
        elif isinstance(layer, nn.Linear) and has_bias:
            largest = 1 if position < len(weighted) - 1 else min(width_bound, layer.out_features)
            note = "input = weight row / bias entry for one sample" if largest == 1 else "head: samples un-mixed up to the class count"
        else:
            missing = inputs - outputs
            largest = ANY_BATCH if missing <= 0 else max(0, layer.weight.numel() // missing)
            note = "forward + gradient equations (R-GAP count)"
        determined = bool(is_sent and batch <= largest)
        rows.append(LayerIdentifiability(
            name=name, kind="linear" if isinstance(layer, nn.Linear) else "conv", inputs=inputs, outputs=outputs,
            gradient_rank=rank, equations=equations, unknowns=unknowns, determined=determined,
            relu_input=relu_input, largest_batch=largest, note=note,
        ))
    largest, route = _largest_exact_batch(rows)
    return Identifiability(batch=batch, layers=rows, largest_exact_batch=largest, exact=batch <= largest, route=route)


def _largest_exact_batch(rows: list[LayerIdentifiability]) -> tuple[int, str]:
    """Images follow from a disaggregated ReLU layer when everything below it is a single layer that
    its outputs determine; otherwise from the head down, when every layer is determined."""
    if len(rows) >= 2 and rows[1].relu_input and rows[1].kind == "linear":
        first, chain = rows[0], rows[1]
        # The first layer's active outputs (about half) give each image: B coordinates in the row
        # space of a Linear layer's gradient, or the whole image when half a conv's outputs exceed its inputs.
        if first.kind == "linear":
            below = min(first.outputs // 2, first.inputs)
        else:
            below = chain.largest_batch if first.outputs // 2 >= first.inputs else 0
        largest = min(chain.largest_batch, below)
        return largest, f"{chain.name} disaggregates its ReLU inputs, {first.name}'s active units then give the images"
    largest = min((row.largest_batch for row in rows), default=0)
    return largest, "every layer from the head down must be determined"


def _layer_shapes(model: nn.Module, input_shape: tuple[int, int, int]) -> dict[str, tuple[int, int]]:
    """(inputs, outputs) per sample of every Linear/Conv2d layer, from one forward pass of zeros."""
    shapes: dict[str, tuple[int, int]] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            hooks.append(module.register_forward_hook(
                lambda m, i, o, name=name: shapes.__setitem__(name, (i[0][0].numel(), o[0].numel()))
            ))
    try:
        parameter = next(model.parameters())
        was_training = model.training
        model.eval()  # no BatchNorm statistics move
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, dtype=parameter.dtype, device=parameter.device))
        model.train(was_training)
    finally:
        for hook in hooks:
            hook.remove()
    return shapes
