"""The span attack (DAGER-class, Petrov et al. 2024): whole batches of sentences, exactly, from the
gradients of the first two attention layers.

The attack receives the server's model, the client's :class:`~gradleak.text.client.TextUpdate`
(gradient, sequence lengths, declared defenses) and the public special-token ids; it never sees
the sentences.

1. **Rank limit, stated first.** Every token that receives a gradient adds at most one direction
   to a layer's input span, so the test can only tell inputs apart while the batch has clearly
   fewer such tokens than the layer is wide: ``tokens ≤ width − 20`` (``RANK_MARGIN``). Beyond
   it the attack still runs but says that its recovery is partial, and why.
2. **Layer 1: tokens.** Block 0's query/key/value input for a (token, position) pair is
   ``LayerNorm(embedding + position)``; it lies in the span of the block-0 projection gradient iff
   the pair could be in the batch. The test keeps the batch's tokens (at their positions, and,
   in a batch, at other batch positions too: the span of present pairs contains every mix of a
   present token and a present position, so positions are settled by layer 2).
3. **Layer 2: sentences.** Block 1's projection input at position ``t`` depends on the tokens
   before ``t`` (decoders) or on the whole sentence (encoders).
   *Decoders* (:mod:`gradleak.text.span_decoder`) grow every prefix by each candidate token and
   keep the extensions whose block-1 input lies in the block-1 span (a tree of accepted
   prefixes; its paths, matched to the known lengths, are the sentences); on an exact gradient,
   block 0's attention context screens the candidates first (the same exact test, ~100× cheaper).
   *Encoders* (:mod:`gradleak.text.span_encoder`) search whole sentences of each known length:
   random starts, refined position by position (each position takes the token closest to the
   span given the others) until every position's block-1 input lies in the span; the search
   stops once the accepted sentences explain the whole block-1 span.
4. **Exactness without ground truth.** The recovered batch's gradient is recomputed and compared
   with the shared one (relative squared L2 below 1e-10: exact).

Defended updates: the threshold comes from the noise model the defenses declare
(:mod:`gradleak.text.span_setup`): the span keeps only directions above the noise's
Marchenko–Pastur edge and the distance threshold grows as ``‖noise‖ / weakest kept direction``. Where no candidate passes (the exact test fails), the attack continues with the
distance itself as a continuous score, in the spirit of TIGER: each prefix still needed (known from
the lengths) takes its best-scoring extension, so recovery degrades gradually instead of stopping.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gradleak.text.attack import (
    EXACT_RELATIVE_L2,
    TextAttackResult,
    TextObserver,
    TextStepReport,
)
from gradleak.text.client import TextUpdate, _loss_gradient
from gradleak.text.span_decoder import decode_decoder
from gradleak.text.span_encoder import decode_encoder
from gradleak.text.span_setup import build_setup, token_candidates

RANK_MARGIN = 20  # tokens per batch ≤ width − RANK_MARGIN: the span test still discriminates


@dataclass(frozen=True)
class SpanAttackConfig:
    """Knobs of :func:`run_span_attack`.

    Attributes:
        threshold: relative distance below which an input counts as in the span; ``None``: from
            the noise model (``EXACT_THRESHOLD`` for an exact gradient).
        chunk: candidate sequences per forward pass (memory against speed).
        screen: decoders: screen candidates by block 0's attention context before block 1
            (off: every candidate through block 0's MLP, the reference for the speed-up).
        starts: encoders: random starting sentences per sentence still missing, per round.
        rounds: encoders: at most this many rounds of random starts.
        sweeps: encoders: at most this many position-by-position refinement sweeps per start.
        noise_source: ``auto``, ``published`` or ``estimated`` (see the noise model).
    """

    threshold: float | None = None
    chunk: int = 2048
    screen: bool = True
    starts: int = 6
    rounds: int = 4
    sweeps: int = 8
    noise_source: str = "auto"


@dataclass
class RankCheck:
    """The rank limit, computed from public information before the attack runs."""

    tokens: int  # tokens that receive a gradient in block 0
    width: int
    limit: int

    @property
    def within(self) -> bool:
        return self.tokens <= self.limit

    def describe(self) -> str:
        verdict = "within" if self.within else "BEYOND"
        text = (f"rank limit: {self.tokens} batch tokens vs {self.limit} (= width {self.width} − "
                f"{RANK_MARGIN}): {verdict} the limit")
        if not self.within:
            text += ("; the input span fills the layer, so the span test cannot tell tokens apart "
                     "and recovery is partial: split the batch (--batch-size) to recover it exactly")
        return text


def rank_check(update: TextUpdate, width: int, causal: bool) -> RankCheck:
    """Tokens that reach block 0 with a gradient: a decoder's last token feeds no loss term."""
    tokens = sum(n - 1 if causal else n for n in update.lengths)
    return RankCheck(tokens=tokens, width=width, limit=width - RANK_MARGIN)


def applies(model: Any) -> bool:
    """Whether the span attack knows this model's family (``auto`` uses it then)."""
    from gradleak.text.layer_inputs import LAYER_INPUTS

    return str(getattr(model.config, "model_type", "")) in LAYER_INPUTS


def relative_gradient_distance(model: Any, update: TextUpdate, seqs: list[list[int]], pad: int) -> float:
    """``‖g(seqs) − g*‖² / ‖g*‖²``: 0 (up to rounding) when ``seqs`` reproduce the update."""
    grads = _loss_gradient(model, seqs, pad)
    num = sum(float((g.double() - t.double()).pow(2).sum()) for g, t in zip(grads, update.tensors))
    den = sum(float(t.double().pow(2).sum()) for t in update.tensors) or 1.0
    return num / den


def run_span_attack(
    model: Any,
    update: TextUpdate,
    special: dict[str, int],
    config: SpanAttackConfig | None = None,
    observer: TextObserver | None = None,
    *,
    announce: Callable[[str], None] | None = None,
) -> TextAttackResult:
    """Recover the batch behind ``update`` (see the module docstring); ``announce`` receives the
    rank-limit line before the attack runs."""
    config = config or SpanAttackConfig()
    t0 = time.perf_counter()
    device = next(model.parameters()).device
    setup = build_setup(model, update, threshold=config.threshold, noise_source=config.noise_source)
    check = rank_check(update, setup.inputs.width, setup.inputs.causal)
    notes = [check.describe()]
    if announce is not None:
        announce(notes[0])
    if setup.noise_std > 0:
        notes.append(f"noise-aware span test ({setup.noise_description}): span ranks "
                     f"{setup.span1.rank}/{setup.span2.rank}, thresholds {setup.tau1:.2g}/{setup.tau2:.2g}")
    vocab = int(model.get_input_embeddings().weight.shape[0])
    cands = token_candidates(setup, vocab, max(update.lengths), {special["pad"]}, device)
    if not config.screen:
        setup.screen = None
    if not check.within:
        setup.screen = None  # the span fills the layer: the screen would let everything through
        # The test passes (nearly) everything: keep the best-scoring few per position so the
        # search stays bounded; what comes back is a partial, continuous-score recovery.
        cands = [c[: max(8, update.batch_size)] for c in cands]
    decode = decode_decoder if setup.inputs.causal else decode_encoder
    seqs, rel = [], math.inf
    for reading in decode(setup, update, special, cands, config, device, notes):
        distance = relative_gradient_distance(model, update, reading, special["pad"])
        if distance < rel:
            seqs, rel = reading, distance
        if rel < EXACT_RELATIVE_L2:
            break
    exact = rel < EXACT_RELATIVE_L2
    if exact:
        stop = "exact: the recovered batch reproduces the shared gradient"
    elif setup.noise_std > 0:
        stop = "noisy update: best span match (no exact check possible under noise)"
    else:
        stop = "not exact: the recovered batch does not reproduce the shared gradient"
    stop = "; ".join([stop, *notes])
    if observer is not None:
        observer(TextStepReport(iteration=1, loss=rel, token_ids=seqs, stage="span", decoded_distance=rel))
    token_set = sorted({int(v) for c in cands for v in c})
    return TextAttackResult(
        token_ids=seqs, losses=[], refine_losses=[], decoded_distances=[(1, rel)], iterations=1,
        refine_passes=0, seconds=time.perf_counter() - t0, candidate_ids=token_set,
        leaked_counts={}, token_set_source="span-test", final_distance=rel,
        final_relative_l2=rel, stop_reason=stop,
    )
