"""Label recovery from the last layer's gradient (no optimisation, no ground truth)."""

from __future__ import annotations

import torch

from gradleak.types import SharedUpdate


def last_layer_weight_gradient(update: SharedUpdate) -> torch.Tensor:
    """The (num_classes, features) weight gradient of the final Linear layer.

    Parameters are shared in ``model.parameters()`` order, so the classifier's weight is the last
    2-D tensor whose first dimension is the class count.
    """
    for tensor in reversed(update.tensors):
        if tensor.dim() == 2 and tensor.shape[0] == update.num_classes:
            return tensor
    raise ValueError("no final Linear weight gradient with one row per class in the update")


def idlg_label(update: SharedUpdate) -> int:
    """iDLG (Zhao et al. 2020): with cross entropy and non-negative features, only the true class's
    row of the last weight gradient sums to a negative value; take the most negative row."""
    rows = last_layer_weight_gradient(update).sum(dim=-1)
    return int(torch.argmin(rows).item())
