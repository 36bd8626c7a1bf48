"""The client side of the text experiment: one masked-LM step on a batch of private sentences.

Training step (DLG's language setting): the labels are the input tokens themselves at every real
position (``labels = input_ids``, padding ignored), no token is replaced by ``[MASK]``, dropout
is off, and the loss is ``transformers``' mean cross-entropy over those positions. The client
shares the gradient of that loss with respect to every parameter, in ``model.parameters()`` order.

What the server learns besides the gradient is the input shape, as DLG assumes: the batch size
and each sequence's length in tokens (with ``[CLS]``/``[SEP]``), i.e. the padding mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class TextUpdate:
    """What a text client shares: everything a text attack may use (with the model).

    Attributes:
        tensors: gradient of the masked-LM loss, one tensor per ``model.parameters()`` entry.
        batch_size: number of sentences.
        lengths: tokens per sentence, ``[CLS]`` and ``[SEP]`` included (the input shape).
        objective: the training objective behind ``tensors``.
    """

    tensors: tuple[torch.Tensor, ...]
    batch_size: int
    lengths: tuple[int, ...]
    objective: str = "mlm-labels-are-inputs"
    defenses: tuple[str, ...] = field(default=())


def pad_batch(
    batch_ids: list[list[int]], pad_id: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` of shape ``(B, max_len)``, right-padded with ``pad_id``."""
    width = max(len(s) for s in batch_ids)
    ids = torch.full((len(batch_ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch_ids), width), dtype=torch.long)
    for b, seq in enumerate(batch_ids):
        ids[b, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[b, : len(seq)] = 1
    return ids.to(device), mask.to(device)


def mlm_gradient(model: Any, batch_ids: list[list[int]], pad_id: int) -> TextUpdate:
    """The client's shared update for ``batch_ids`` (token ids with special tokens).

    Example:
        >>> from gradleak.text.model import load_text_model
        >>> tm = load_text_model("tiny-bert-2l")
        >>> upd = mlm_gradient(tm.model, [tm.tokenizer.encode("hello world")], 0)
        >>> upd.batch_size, upd.lengths, len(upd.tensors) == len(list(tm.model.parameters()))
        (1, (4,), True)
    """
    device = next(model.parameters()).device
    ids, mask = pad_batch(batch_ids, pad_id, device)
    labels = ids.masked_fill(mask == 0, -100)
    params = [p for p in model.parameters()]
    loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    tensors = tuple(
        (torch.zeros_like(p) if g is None else g).detach() for p, g in zip(params, grads)
    )
    return TextUpdate(
        tensors=tensors, batch_size=len(batch_ids), lengths=tuple(len(s) for s in batch_ids)
    )
