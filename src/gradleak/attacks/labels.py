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


def last_layer_bias_gradient(update: SharedUpdate) -> torch.Tensor | None:
    """The final Linear layer's bias gradient (a 1-D tensor of one entry per class), if shared."""
    tensors = list(update.tensors)
    for i in range(len(tensors) - 1, 0, -1):
        if tensors[i].dim() == 1 and tensors[i].shape[0] == update.num_classes and tensors[i - 1].dim() == 2:
            return tensors[i]
    return None


def as_gradient_signal(update: SharedUpdate) -> torch.Tensor:
    """Per-class signal that is negative for the classes in the batch (from the last layer).

    For a FedAvg weight change the sign flips (Δ = −η·Σ gradients), so the change is rescaled to a
    mean gradient; for several local steps this is an approximation, as in the literature.
    """
    signal = last_layer_bias_gradient(update)
    if signal is None:
        signal = last_layer_weight_gradient(update).sum(dim=-1)
    if update.kind == "weight_delta":
        signal = -signal / (float(update.local_lr or 1.0) * update.local_steps)
    return signal.detach().double().cpu()


def hidden_present_classes(update: SharedUpdate, signal: torch.Tensor | None = None) -> list[int]:
    """Present classes that the bias signal misses, most evident first.

    A class the model already predicts with high probability can have ``Σ_b p_bc ≥ 1`` and so a
    positive bias-gradient entry although it is in the batch. Its weight-gradient row still gives it
    away when the features are non-negative (sigmoid/ReLU outputs): an absent class's row is
    ``Σ_b p_bc h_bᵀ``, all entries ≥ 0, while a present class's row mixes in ``−(1 − p) h_b`` and has
    negative entries. Returns the positive-signal classes whose row carries more than 5% negative
    mass, when the surely present classes show that the features are non-negative (their rows
    almost entirely negative); otherwise none.
    """
    signal = as_gradient_signal(update) if signal is None else signal
    rows = last_layer_weight_gradient(update).detach().double().cpu()
    if update.kind == "weight_delta":
        rows = -rows
    share = rows.clamp(max=0).abs().sum(dim=1) / rows.abs().sum(dim=1).clamp_min(1e-300)
    negatives = torch.nonzero(signal < 0).flatten()
    if len(negatives) == 0 or float(share[negatives].min()) < 0.95:
        return []
    hidden = [int(c) for c in torch.nonzero((signal >= 0) & (share > 0.05)).flatten()]
    return sorted(hidden, key=lambda c: -float(share[c]))


def restore_batch_labels(update: SharedUpdate) -> torch.Tensor:
    """Labels of a batch (with repeats) from the last layer's gradient, no optimisation.

    Each occurrence of class c in a batch of B adds (p_c − 1)/B to the bias gradient of c, every
    other sample adds p_c/B ≥ 0. So (1) a class is present where the entry is negative, and
    (2) repeated classes are found by giving each present class one label, then repeatedly giving
    one more to the class whose entry stays most negative after subtracting the impact of the
    labels already given (the bias-corrected method of Geiping et al., as in breaching; Wainakh et
    al. 2022). Returns a sorted tensor of ``batch_size`` labels.

    Example:
        >>> import torch
        >>> from gradleak.models import build_model
        >>> from gradleak.scenarios import FedSGD
        >>> _ = torch.manual_seed(0)
        >>> model = build_model("lenetmnist", channels=1, image_size=28, num_classes=10)
        >>> update = FedSGD().share(model, torch.rand(3, 1, 28, 28), torch.tensor([7, 2, 7]))
        >>> restore_batch_labels(update).tolist()
        [2, 7, 7]
    """
    batch = update.batch_size
    signal = as_gradient_signal(update) * batch  # per-class Σ_i (p_ic − 1[y_i = c])
    if batch == 1:
        return torch.tensor([int(torch.argmin(signal))])
    return torch.tensor(allocate_labels(signal, batch, hidden_present_classes(update, signal / batch)))


def allocate_labels(signal: torch.Tensor, batch: int, hidden: list[int] | None = None) -> list[int]:
    """The bias-corrected count estimate behind :func:`restore_batch_labels`, from the signal alone.

    ``signal`` is the per-class bias-gradient signal (any positive scale; only its sign and
    relative sizes matter), ``hidden`` the present classes it misses. Returns ``batch`` sorted labels.

    Example:
        >>> import torch
        >>> allocate_labels(torch.tensor([-2.1, 0.4, -0.9, 0.3]), 4)
        [0, 0, 0, 2]
    """
    signal = signal.detach().double().cpu()
    present = [int(c) for c in torch.nonzero(signal < 0).flatten()]
    present.sort(key=lambda c: float(signal[c]))
    if len(present) < batch:
        present += [c for c in (hidden or []) if c not in present]
    labels = present[:batch]
    if not labels:
        labels = [int(torch.argmin(signal))]
    # Mean impact of one occurrence: the negative mass shared among the labels found so far.
    impact = float(-signal[signal < 0].sum()) / batch if (signal < 0).any() else 1.0
    remaining = signal.clone()
    for c in labels:
        remaining[c] += impact
    while len(labels) < batch:
        c = int(torch.argmin(remaining))
        labels.append(c)
        remaining[c] += impact
    return sorted(labels)
