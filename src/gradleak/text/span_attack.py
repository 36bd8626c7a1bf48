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
   *Decoders* grow every prefix by each candidate token and keep the extensions whose block-1
   input lies in the block-1 span (a tree of accepted prefixes; its paths, matched to the known
   lengths, are the sentences). *Encoders* search each sentence of known length: left to right
   over prefixes (the prefix's own bidirectional context), keeping the best few per step, then
   position-by-position sweeps over the whole sentence until every block-1 input lies in the span.
4. **Exactness without ground truth.** The recovered batch's gradient is recomputed and compared
   with the shared one (relative squared L2 below 1e-10: exact).

Defended updates: the threshold comes from the noise model the defenses declare
(:func:`gradleak.attacks.noise_model.noise_model`): the span keeps only directions above the
noise's Marchenko–Pastur edge and the distance threshold grows as ``‖noise‖ / weakest kept
direction``. Where no candidate passes (the exact test fails), the attack continues with the
distance itself as a continuous score, in the spirit of TIGER: each prefix still needed (known from
the lengths) takes its best-scoring extension, so recovery degrades gradually instead of stopping.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from gradleak.text.attack import EXACT_RELATIVE_L2, TextAttackResult, TextObserver, TextStepReport
from gradleak.text.client import TextUpdate, _loss_gradient
from gradleak.text.layer_inputs import LayerInputs, layer_inputs
from gradleak.text.span import InputSpan, input_span, noise_threshold, span_distance
from gradleak.text.span_encoder import decode_encoder

RANK_MARGIN = 20  # tokens per batch ≤ width − RANK_MARGIN: the span test still discriminates


@dataclass(frozen=True)
class SpanAttackConfig:
    """Knobs of :func:`run_span_attack`.

    Attributes:
        threshold: relative distance below which an input counts as in the span; ``None``: from
            the noise model (``EXACT_THRESHOLD`` for an exact gradient).
        chunk: candidate sequences per forward pass (memory against speed).
        starts: encoders: random starting sentences per sentence still missing, per round.
        rounds: encoders: at most this many rounds of random starts.
        sweeps: encoders: at most this many position-by-position refinement sweeps per start.
        noise_source: ``auto``, ``published`` or ``estimated`` (see the noise model).
    """

    threshold: float | None = None
    chunk: int = 2048
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


# ---------------------------------------------------------------------------------------------


@dataclass
class _Setup:
    inputs: LayerInputs
    span1: InputSpan
    span2: InputSpan
    tau1: float
    tau2: float
    noise_std: float
    noise_description: str


def _noise_std(update: TextUpdate, source: str) -> tuple[float, str]:
    if not update.defenses and source != "estimated":
        return 0.0, "exact gradient"
    from gradleak.attacks.noise_model import noise_model

    model = noise_model(update.as_shared_update(), source="published" if update.defenses else source)
    variance = max((float(v.double().max()) for v in model.variances), default=0.0)
    return math.sqrt(max(variance, 0.0)), model.description


def _setup(model: Any, update: TextUpdate, config: SpanAttackConfig) -> _Setup:
    inputs = layer_inputs(model)
    std, description = _noise_std(update, config.noise_source)
    spans = [input_span(inputs.projection_gradient(update.tensors, k), noise_std=std) for k in (0, 1)]
    taus = [config.threshold or noise_threshold(s, std) for s in spans]
    return _Setup(inputs, spans[0], spans[1], taus[0], taus[1], std, description)


def _token_candidates(
    setup: _Setup, vocab: int, positions: int, exclude: set[int], device: torch.device
) -> list[torch.Tensor]:
    """Per position ``p < positions``: the token ids whose block-0 input passes the span test,
    best first (the continuous score orders them)."""
    tokens = torch.tensor([v for v in range(vocab) if v not in exclude], device=device)
    out = []
    for p in range(positions):
        d = span_distance(setup.span1.basis, setup.inputs.first_inputs(tokens, torch.full_like(tokens, p)))
        keep = d < setup.tau1
        order = torch.argsort(d[keep])
        out.append(tokens[keep][order])
    return out


def _decode_decoder(
    setup: _Setup, update: TextUpdate, special: dict[str, int], cands: list[torch.Tensor],
    config: SpanAttackConfig, device: torch.device, notes: list[str],
) -> list[list[list[int]]]:
    """Grow the tree of accepted prefixes; return the readings of the tree as batches (one
    sequence per sentence, with specials): sentences that start others, or repeated sentences."""
    lengths = sorted(update.lengths, reverse=True)
    content = [n - 2 for n in lengths]
    frontier: list[list[int]] = [[special["cls"]]]
    nodes: dict[int, list[tuple[list[int], float, bool]]] = {}  # content length -> (seq, score, leaf)
    scores = {0: 0.0}
    fallback_steps = 0
    for t in range(1, max(content) + 1):
        needed = sum(1 for c in content if c >= t)
        pool = cands[t] if cands[t].numel() else cands[0]
        if not pool.numel():
            break
        parent = torch.arange(len(frontier), device=device).repeat_interleave(pool.numel())
        d = _extension_distances(setup, frontier, pool, device, config.chunk)
        accepted = (d < setup.tau2).nonzero().flatten()
        if accepted.numel() == 0:
            # The exact test fails (noise): keep the best extension of the best prefixes.
            fallback_steps += 1
            best = torch.full((len(frontier),), math.inf, dtype=torch.float64)
            arg = torch.zeros(len(frontier), dtype=torch.long)
            for i in range(len(frontier)):
                rows = (parent == i).nonzero().flatten()
                k = int(torch.argmin(d[rows]))
                best[i], arg[i] = d[rows[k]], rows[k]
            accepted = arg[torch.argsort(best)[: max(1, needed)]]
        elif accepted.numel() > max(2 * needed, needed + 8):
            accepted = accepted[torch.argsort(d[accepted])[: max(2 * needed, needed + 8)]]
        extended = {int(parent[i]) for i in accepted}
        for i, f in enumerate(frontier):
            nodes.setdefault(len(f) - 1, []).append((f, scores.get(i, 0.0), i not in extended))
        frontier = [frontier[int(i) // pool.numel()] + [int(pool[int(i) % pool.numel()])] for i in accepted]
        scores = {k: float(d[int(i)]) for k, i in enumerate(accepted)}
    for i, f in enumerate(frontier):
        nodes.setdefault(len(f) - 1, []).append((f, scores.get(i, 0.0), True))
    if fallback_steps:
        notes.append(f"{fallback_steps} position(s) decoded by the continuous score (no candidate "
                     f"passed the span test at threshold {setup.tau2:.2g})")
    readings = [_match_lengths(nodes, update.lengths, special, repeat_leaves=r) for r in (False, True)]
    return [r for k, r in enumerate(readings) if r not in readings[:k]]


def _extension_distances(
    setup: _Setup, frontier: list[list[int]], pool: torch.Tensor, device: torch.device, chunk: int
) -> torch.Tensor:
    """Block-1 span distance of every ``prefix + token`` (prefix-major order).

    The bulk runs in float32; values near the threshold are recomputed in float64, so float32
    rounding (~1e-6) never decides acceptance.
    """
    assert setup.inputs.extend is not None
    prefixes = torch.tensor(frontier, device=device)
    basis32 = setup.span2.basis.float()
    per = max(1, chunk // max(1, pool.numel()))
    parts = []
    for s in range(0, prefixes.shape[0], per):
        x = setup.inputs.extend(prefixes[s : s + per], pool, torch.float32)
        parts.append(span_distance(basis32, x).flatten())
    d = torch.cat(parts).double()
    k = pool.numel()
    close = (d < max(10 * setup.tau2, 1e-3)).nonzero().flatten()
    for r in torch.unique(close // k).tolist():  # one float64 call per prefix, its close tokens only
        cols = close[close // k == r] % k
        x = setup.inputs.extend(prefixes[r : r + 1], pool[cols], torch.float64)
        d[r * k + cols] = span_distance(setup.span2.basis, x)[0]
    return d


def _match_lengths(
    nodes: dict[int, list[tuple[list[int], float, bool]]], lengths: tuple[int, ...],
    special: dict[str, int], *, repeat_leaves: bool = False,
) -> list[list[int]]:
    """One accepted prefix per sentence of the known lengths: unused leaves first, then inner
    prefixes (a sentence that is the start of another), then repeats (duplicate sentences);
    ``repeat_leaves`` tries repeats of leaves before inner prefixes (the gradient check decides
    which reading is right)."""
    used: set[tuple[int, ...]] = set()
    out = []
    for n in lengths:
        c = n - 2
        options = sorted(nodes.get(c, []), key=lambda o: (not o[2], o[1]))
        fresh = [o for o in options if tuple(o[0]) not in used]
        if repeat_leaves and fresh and not fresh[0][2]:
            fresh = [o for o in options if o[2]] or fresh
        if fresh or options:
            seq = (fresh or options)[0][0]
        else:  # no prefix of that length: the longest shorter one
            shorter = [k for k in nodes if k < c]
            seq = min(nodes[max(shorter)], key=lambda o: o[1])[0] if shorter else [special["cls"]]
        used.add(tuple(seq))
        out.append(list(seq) + [special["sep"]])
    return out


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
    setup = _setup(model, update, config)
    check = rank_check(update, setup.inputs.width, setup.inputs.causal)
    notes = [check.describe()]
    if announce is not None:
        announce(notes[0])
    if setup.noise_std > 0:
        notes.append(f"noise-aware span test ({setup.noise_description}): span ranks "
                     f"{setup.span1.rank}/{setup.span2.rank}, thresholds {setup.tau1:.2g}/{setup.tau2:.2g}")
    vocab = int(model.get_input_embeddings().weight.shape[0])
    cands = _token_candidates(setup, vocab, max(update.lengths), {special["pad"]}, device)
    if not check.within:
        # The test passes (nearly) everything: keep the best-scoring few per position so the
        # search stays bounded; what comes back is a partial, continuous-score recovery.
        cands = [c[: max(8, update.batch_size)] for c in cands]
    decode = _decode_decoder if setup.inputs.causal else decode_encoder
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
