"""Layer 2 of the span attack for decoders (GPT-2): a tree of accepted prefixes.

Block 1's input at position ``t`` depends only on the tokens up to ``t``, so every prefix can be
grown by each candidate token and tested exactly: the extensions whose input lies in the span
are the batch's prefixes. The paths of the tree, matched to the known lengths, are the sentences.
Under noise, where no extension passes, each prefix still needed takes its best-scoring
extension (a continuous score in the spirit of TIGER), so recovery degrades gradually.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from gradleak.text.client import TextUpdate
from gradleak.text.span import span_distance
from gradleak.text.span_setup import SpanSetup


def decode_decoder(
    setup: SpanSetup, update: TextUpdate, special: dict[str, int], cands: list[torch.Tensor],
    config: Any, device: torch.device, notes: list[str],
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
    setup: SpanSetup, frontier: list[list[int]], pool: torch.Tensor, device: torch.device, chunk: int
) -> torch.Tensor:
    """Block-1 span distance of every ``prefix + token`` (prefix-major order).

    The bulk runs in float32; values near the threshold are recomputed in float64, so float32
    rounding (~1e-6) never decides acceptance. With a screen (exact gradient), the bulk is block
    0's attention context against its own span, and only the pairs it lets through are computed
    through block 0's MLP in float64 (the others are reported at distance 1).
    """
    inputs = setup.inputs
    assert inputs.extend is not None
    prefixes = torch.tensor(frontier, device=device)
    screened = setup.screen is not None and inputs.screen is not None
    if screened:
        basis32, bulk, tau = setup.screen.basis.float(), inputs.screen, setup.screen_tau
    else:
        basis32, bulk, tau = setup.span2.basis.float(), inputs.extend, setup.tau2
    per = max(1, chunk // max(1, pool.numel()))
    parts = []
    for s in range(0, prefixes.shape[0], per):
        parts.append(span_distance(basis32, bulk(prefixes[s : s + per], pool, torch.float32)).flatten())
    d = torch.cat(parts).double()
    k = pool.numel()
    close = (d < max(10 * tau, 1e-3)).nonzero().flatten()
    if screened:
        d = torch.ones_like(d)
    if close.numel():  # one float64 call for every close pair, each with its own prefix
        x = inputs.extend(prefixes[close // k], pool[close % k][:, None], torch.float64)
        d[close] = span_distance(setup.span2.basis, x)[:, 0]
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
