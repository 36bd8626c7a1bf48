"""The client side of the text experiment: one language-model step on a batch of private sentences.

Training step: the labels are the input tokens (``labels = input_ids``, padding ignored), no
token is replaced by ``[MASK]``, dropout is off, and the loss is ``transformers``' mean
cross-entropy. For a masked LM (BERT, DLG's language setting) every real position predicts its own
token; for a causal LM (GPT-2) ``transformers`` shifts the labels, so each position predicts the
next token (the next-token loss of language-model fine-tuning). The client shares the gradient of
that loss with respect to every parameter, in ``model.parameters()`` order, optionally defended
(:func:`defended_gradient`: the project's ``--defense`` specs, DP-SGD included).

What the server learns besides the gradient is the input shape, as DLG assumes: the batch size
and each sequence's length in tokens (with ``[CLS]``/``[SEP]``), i.e. the padding mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from gradleak.types import SharedUpdate


@dataclass(frozen=True)
class TextUpdate:
    """What a text client shares: everything a text attack may use (with the model).

    Attributes:
        tensors: gradient of the loss, one tensor per ``model.parameters()`` entry.
        batch_size: number of sentences.
        lengths: tokens per sentence, ``[CLS]`` and ``[SEP]`` included (the input shape).
        objective: the training objective behind ``tensors``.
        defenses: the ``--defense`` specs the client applied, in order (public, as in the
            image experiments: the noise model reads them).
    """

    tensors: tuple[torch.Tensor, ...]
    batch_size: int
    lengths: tuple[int, ...]
    objective: str = "mlm-labels-are-inputs"
    defenses: tuple[str, ...] = field(default=())

    def as_shared_update(self) -> SharedUpdate:
        """The same values as the project's :class:`~gradleak.types.SharedUpdate`, so that the
        defenses and the noise model of the image experiments apply unchanged."""
        return SharedUpdate(
            tensors=self.tensors, kind="gradient", batch_size=self.batch_size,
            input_shape=(1, 1, max(self.lengths)), num_classes=0, defenses=self.defenses,
        )


OBJECTIVES = {"masked": "mlm-labels-are-inputs", "causal": "causal-lm-next-token"}


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


def _loss_gradient(model: Any, batch_ids: list[list[int]], pad_id: int) -> tuple[torch.Tensor, ...]:
    device = next(model.parameters()).device
    ids, mask = pad_batch(batch_ids, pad_id, device)
    labels = ids.masked_fill(mask == 0, -100)
    params = list(model.parameters())
    loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return tuple((torch.zeros_like(p) if g is None else g).detach() for p, g in zip(params, grads))


def mlm_gradient(
    model: Any, batch_ids: list[list[int]], pad_id: int, *, objective: str = "masked"
) -> TextUpdate:
    """The client's shared update for ``batch_ids`` (token ids with special tokens).

    ``objective`` only labels the update: the model's class decides the loss (a masked LM
    predicts each token, a causal LM the next one).

    Example:
        >>> from gradleak.text.model import load_text_model
        >>> tm = load_text_model("tiny-bert-2l")
        >>> upd = mlm_gradient(tm.model, [tm.tokenizer.encode("hello world")], 0)
        >>> upd.batch_size, upd.lengths, len(upd.tensors) == len(list(tm.model.parameters()))
        (1, (4,), True)
    """
    return TextUpdate(
        tensors=_loss_gradient(model, batch_ids, pad_id), batch_size=len(batch_ids),
        lengths=tuple(len(s) for s in batch_ids), objective=OBJECTIVES[objective],
    )


def defended_gradient(
    model: Any,
    batch_ids: list[list[int]],
    pad_id: int,
    defenses: Sequence[Any] = (),
    *,
    objective: str = "masked",
    generator: torch.Generator | None = None,
) -> TextUpdate:
    """The update after the client's ``defenses`` (parsed ``--defense`` specs, in order).

    DP-SGD (at most one) acts at gradient time: each sentence is one example, its gradient is
    clipped to the defense's norm, the clipped gradients are summed, the defense's Gaussian noise
    is added and the sum divided by the batch size. Per-sentence gradients are computed one
    sentence at a time (a vmap over a 100M-parameter model would need a copy per sentence). The
    other defenses are the image experiments' own transforms, applied afterwards.

    Example:
        >>> from gradleak.defenses import parse_defenses
        >>> from gradleak.text.model import load_text_model
        >>> tm = load_text_model("tiny-bert-2l")
        >>> ids = [tm.tokenizer.encode("hello world"), tm.tokenizer.encode("good night")]
        >>> upd = defended_gradient(tm.model, ids, 0, parse_defenses(["dpsgd:clip=1,sigma=0"]))
        >>> upd.defenses
        ('dpsgd:clip=1.0,sigma=0.0,delta=1e-05',)
    """
    from gradleak.defenses import apply_defenses, split_dpsgd
    from gradleak.defenses.dpsgd import clip_per_example
    from gradleak.defenses.noise import normal_like

    dp, post_hoc = split_dpsgd(defenses)
    if dp is None:
        update = mlm_gradient(model, batch_ids, pad_id, objective=objective)
    else:
        total: list[torch.Tensor] | None = None
        for seq in batch_ids:
            # clip_per_example works on a batch dimension: a batch of one sentence here.
            one = clip_per_example([g.unsqueeze(0) for g in _loss_gradient(model, [seq], pad_id)], dp.clip)
            total = [g[0] for g in one] if total is None else [t + g[0] for t, g in zip(total, one)]
        assert total is not None
        with torch.no_grad():
            if dp.sigma > 0:
                total = [t + (dp.sigma * dp.clip) * normal_like(t, generator) for t in total]
            tensors = tuple(t / len(batch_ids) for t in total)
        update = TextUpdate(
            tensors=tensors, batch_size=len(batch_ids), lengths=tuple(len(s) for s in batch_ids),
            objective=OBJECTIVES[objective], defenses=(dp.name,),
        )
    if post_hoc:
        shared = apply_defenses(update.as_shared_update(), post_hoc, generator=generator)
        update = TextUpdate(
            tensors=shared.tensors, batch_size=update.batch_size, lengths=update.lengths,
            objective=update.objective, defenses=shared.defenses,
        )
    return update
